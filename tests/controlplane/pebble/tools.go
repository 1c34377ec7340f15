//go:build tools

// The lab's ACME CA: Pebble, Let's Encrypt's test server, and its DNS stand-in
// (pebble-challtestsrv), built from their Go module and run on the lab's gateway
// (playbooks/lab.yml), so Traefik's certificate resolver gets the Ingress host's certificate
// over HTTP-01 as it would from Let's Encrypt. A module of its own, like traefik/.
package tools

import (
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble"
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"
)
