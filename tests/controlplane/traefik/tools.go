//go:build tools

// The lab's ingress controller, the one k3s ships: Traefik, built from its Go module and run
// as a pod (tests/support/labingress.py). A module of its own: its requirements (and the three
// forks it replaces) have nothing in common with the control plane's.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
