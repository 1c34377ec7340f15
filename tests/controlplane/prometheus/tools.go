//go:build tools

// The lab's Prometheus, built from its Go module with Kubernetes discovery alone
// (-tags "remove_all_sd enable_kubernetes_sd"): Debian's package has no Kubernetes
// discovery. A module of its own: it needs newer Kubernetes client libraries than
// the control plane's v1.35 accepts.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
