package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/cmd/containerd/command"
	ctr "github.com/containerd/containerd/v2/cmd/ctr/app"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/component-base/cli"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"

	// containerd's plugins, the CRI among them, as its own main registers them.
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
)

// components are the node's programs this binary also is, the way k3s packs
// them: called by that name (a symlink) or with it as the first argument.
var components = map[string]func(args []string) int{
	"kubelet": func(args []string) int {
		cmd := kubeletapp.NewKubeletCommand(context.Background())
		cmd.SetArgs(args)
		return cli.Run(cmd)
	},
	"kube-proxy": func(args []string) int {
		cmd := proxyapp.NewProxyCommand()
		cmd.SetArgs(args)
		return cli.Run(cmd)
	},
	"containerd": func(args []string) int {
		useOwnMetricsRegistry()
		if err := containerd.App().Run(append([]string{"containerd"}, args...)); err != nil {
			fmt.Fprintf(os.Stderr, "containerd: %s\n", err)
			return 1
		}
		return 0
	},
	"ctr": func(args []string) int {
		if err := ctr.New().Run(append([]string{"ctr"}, args...)); err != nil {
			fmt.Fprintf(os.Stderr, "ctr: %s\n", err)
			return 1
		}
		return 0
	},
	"network-policies": networkPolicies,
	"node-kubeconfig":  nodeKubeconfig,
}

// useOwnMetricsRegistry gives a node program a fresh default metrics registry: the
// control plane's packages register their own metrics there at init, and a program
// that registers the same names (containerd's gRPC metrics) would panic.
func useOwnMetricsRegistry() {
	registry := prometheus.NewRegistry()
	prometheus.DefaultRegisterer, prometheus.DefaultGatherer = registry, registry
}

// runComponent runs the component argv names, if any, and exits with its status.
func runComponent(argv []string) bool {
	name, args := filepath.Base(argv[0]), argv[1:]
	run, ok := components[name]
	if !ok && len(args) > 0 {
		name, args = args[0], args[1:]
		run, ok = components[name]
	}
	if !ok {
		return false
	}
	os.Exit(run(args))
	return true
}

// nodeIdentities are the client certificates of a node's programs, from the control
// plane's CA: the kubelet's is what a node's TLS bootstrap ends with; the default RBAC
// binds system:kube-proxy to system:node-proxier; the policy controller's user is bound
// by node/network-policies-rbac.yaml.
var nodeIdentities = map[string]func(node string) *x509.Certificate{
	"kubelet":          func(node string) *x509.Certificate { return clientTemplate("system:node:"+node, "system:nodes") },
	"kube-proxy":       func(string) *x509.Certificate { return clientTemplate("system:kube-proxy", "") },
	"network-policies": func(string) *x509.Certificate { return clientTemplate("kube-network-policies", "") },
}

// nodeKubeconfig writes a kubeconfig for one of a node's programs (nodeIdentities).
func nodeKubeconfig(args []string) int {
	fs := flag.NewFlagSet("node-kubeconfig", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "the control plane's data directory (required)")
	node := fs.String("node", "", "the node's name (required)")
	component := fs.String("component", "kubelet", "whose identity: kubelet, kube-proxy or network-policies")
	server := fs.String("server", "", "the API server's URL as the node reaches it (required)")
	out := fs.String("out", "", "where to write the kubeconfig, mode 0600 (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || *node == "" || *server == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "node-kubeconfig: --data-dir, --node, --server and --out are required")
		return 2
	}
	identity, ok := nodeIdentities[*component]
	if !ok {
		fmt.Fprintf(os.Stderr, "node-kubeconfig: no component %q (kubelet, kube-proxy or network-policies)\n", *component)
		return 2
	}
	if err := writeNodeKubeconfig(newFiles(*dataDir), identity(*node), *server, *out); err != nil {
		fmt.Fprintf(os.Stderr, "node-kubeconfig: %v\n", err)
		return 1
	}
	return 0
}

func writeNodeKubeconfig(f *files, user *x509.Certificate, server, out string) error {
	if !exists(f.caCert) || !exists(f.caKey) {
		return errors.New("no CA in " + f.dir + ": start the control plane first")
	}
	ca, err := loadKeyPair(f.caCert, f.caKey)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "node-cert-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	crt, key := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	if _, err := newCert(&ca, user, crt, key); err != nil {
		return err
	}
	return writeKubeconfig(out, server, f, crt, key)
}
