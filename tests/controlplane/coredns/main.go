// Command coredns is CoreDNS, the cluster DNS k3s deploys, with only the plugins its
// Corefile uses (node/coredns.yaml): the full plugin set would pull every cloud SDK
// into the build. Built from the control plane's module: this CoreDNS release needs
// the same Kubernetes libraries.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	// The plugins above, in CoreDNS's own execution order (core/dnsserver/zdirectives.go).
	dnsserver.Directives = []string{
		"reload", "ready", "health", "prometheus", "errors", "loadbalance", "cache",
		"kubernetes", "loop", "forward",
	}
}

func main() {
	coremain.Run()
}
