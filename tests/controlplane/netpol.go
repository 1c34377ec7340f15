package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

// policyChain is where the node's new connections from and to pods are handed to the
// controller's queue.
const policyChain = "KUBE-NETWORK-POLICIES"

// networkPolicies enforces NetworkPolicies on this node with kube-network-policies
// (kubernetes-sigs), the controller kind runs: each new connection from or to a pod is
// queued to this program, which accepts or drops it by the policies that select the pods.
//
// The library installs its queue rule with an nftables `queue` expression, which needs
// the kernel's CONFIG_NFT_QUEUE; the lab machine's kernel lacks it (the xtables NFQUEUE
// target works). So this program installs the same rules with iptables in mangle
// POSTROUTING (after DNAT, before SNAT: the addresses are the pods') and removes them on
// a clean stop. The library's own nftables sync then fails and logs it; nothing depends
// on it. While the program is down the queue has no reader and pod traffic is dropped:
// enforcement fails closed.
func networkPolicies(args []string) int {
	fs := flag.NewFlagSet("network-policies", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the controller's identity (required)")
	nodeName := fs.String("hostname-override", "", "this node's name (required)")
	clusterCIDR := fs.String("cluster-cidr", "", "the pods' range; connections from or to it are checked (required)")
	queueID := fs.Int("nfqueue-id", 100, "the netfilter queue the rules send new connections to")
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, _, err := net.ParseCIDR(*clusterCIDR); err != nil || *kubeconfig == "" || *nodeName == "" {
		fmt.Fprintln(os.Stderr, "network-policies: --kubeconfig, --hostname-override and an IPv4 --cluster-cidr are required")
		return 2
	}
	if err := enforcePolicies(*kubeconfig, *nodeName, *clusterCIDR, *queueID); err != nil {
		fmt.Fprintf(os.Stderr, "network-policies: %v\n", err)
		return 1
	}
	return 0
}

func enforcePolicies(kubeconfig, nodeName, clusterCIDR string, queueID int) error {
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	// The control plane's packages register their metrics in the default registry at
	// init; the controller's own go to a fresh one (nothing serves them).
	registry := prometheus.NewRegistry()
	prometheus.DefaultRegisterer, prometheus.DefaultGatherer = registry, registry

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	factory := informers.NewSharedInformerFactory(clientset, 0)
	controller, err := networkpolicy.NewController(
		clientset,
		factory.Networking().V1().NetworkPolicies(),
		factory.Core().V1().Namespaces(),
		factory.Core().V1().Pods(),
		nil, nil, nil, nil, // no AdminNetworkPolicy API
		networkpolicy.Config{
			NodeName: nodeName,
			QueueID:  queueID,
			// The DNS race workaround lives in the nftables rules this kernel refuses.
			NetfilterBug1766Fix: false,
		},
	)
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	// Queue nothing before the controller knows every policy and pod: a verdict from
	// a half-filled cache would drop allowed traffic.
	for informer, synced := range factory.WaitForCacheSync(ctx.Done()) {
		if !synced {
			return fmt.Errorf("the %v cache did not sync", informer)
		}
	}
	if err := installQueueRules(clusterCIDR, queueID); err != nil {
		return errors.Join(err, removeQueueRules())
	}
	klog.InfoS("Queueing new pod connections for policy checks", "chain", policyChain, "queue", queueID, "clusterCIDR", clusterCIDR)
	runErr := controller.Run(ctx)
	return errors.Join(runErr, removeQueueRules())
}

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w", "-t", "mangle"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// installQueueRules: connections already accepted and the node's own root processes
// (the kubelet's probes) pass; any other new connection from or to a pod is queued.
func installQueueRules(clusterCIDR string, queueID int) error {
	if iptables("-N", policyChain) != nil {
		if err := iptables("-F", policyChain); err != nil {
			return err
		}
	}
	queue := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(queueID)}
	for _, rule := range [][]string{
		{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"},
		{"-m", "owner", "--uid-owner", "0", "-j", "RETURN"},
		append([]string{"-s", clusterCIDR}, queue...),
		append([]string{"-d", clusterCIDR}, queue...),
	} {
		if err := iptables(append([]string{"-A", policyChain}, rule...)...); err != nil {
			return err
		}
	}
	if iptables("-C", "POSTROUTING", "-j", policyChain) != nil {
		return iptables("-I", "POSTROUTING", "-j", policyChain)
	}
	return nil
}

func removeQueueRules() error {
	if iptables("-L", policyChain, "-n") != nil {
		return nil
	}
	for iptables("-C", "POSTROUTING", "-j", policyChain) == nil {
		if err := iptables("-D", "POSTROUTING", "-j", policyChain); err != nil {
			return err
		}
	}
	return errors.Join(iptables("-F", policyChain), iptables("-X", policyChain))
}
