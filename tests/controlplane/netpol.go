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
	"time"

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
// target works). So this program queues with iptables in mangle POSTROUTING (after
// DNAT, before SNAT: the addresses are the pods'), every new connection from or to the
// cluster range (the library queues only those of pods a policy selects), and removes
// the rules on a clean stop. The library's own nftables sync then fails and logs it;
// nothing depends on it. While the program is down the queue has no reader and pod
// traffic is dropped: enforcement fails closed.
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
	ip, _, err := net.ParseCIDR(*clusterCIDR)
	if err != nil || ip.To4() == nil || *kubeconfig == "" || *nodeName == "" || *queueID < 1 || *queueID > 65535 {
		fmt.Fprintln(os.Stderr, "network-policies: --kubeconfig, --hostname-override, an IPv4 --cluster-cidr and a --nfqueue-id of 1-65535 are required")
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
	useOwnMetricsRegistry() // nothing serves the controller's metrics

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
	// The controller opens the queue once its caches hold every pod and policy. Queue
	// nothing before that: with no reader the kernel drops what is queued.
	done := make(chan error, 1)
	go func() { done <- controller.Run(ctx) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !queueBound(queueID) {
		select {
		case err := <-done:
			if ctx.Err() != nil { // stopped by a signal while starting
				return err
			}
			return errors.Join(fmt.Errorf("the controller stopped before reading queue %d", queueID), err)
		case <-tick.C:
		}
	}
	if err := installQueueRules(clusterCIDR, queueID); err != nil {
		stop()
		return errors.Join(err, <-done, removeQueueRules())
	}
	klog.InfoS("Queueing new pod connections for policy checks", "chain", policyChain, "queue", queueID, "clusterCIDR", clusterCIDR)
	return errors.Join(<-done, removeQueueRules())
}

// queueBound: a program of this network namespace reads the netfilter queue.
func queueBound(queueID int) bool {
	table, err := os.ReadFile("/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(table), "\n") {
		if fields := strings.Fields(line); len(fields) > 0 && fields[0] == strconv.Itoa(queueID) {
			return true
		}
	}
	return false
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
// The chain is written in one iptables-restore transaction, so a restart never leaves
// it empty behind the jump.
func installQueueRules(clusterCIDR string, queueID int) error {
	queue := fmt.Sprintf("-j NFQUEUE --queue-num %d", queueID)
	rules := strings.Join([]string{
		"*mangle",
		":" + policyChain + " - [0:0]",
		"-A " + policyChain + " -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
		"-A " + policyChain + " -m owner --uid-owner 0 -j RETURN",
		"-A " + policyChain + " -s " + clusterCIDR + " " + queue,
		"-A " + policyChain + " -d " + clusterCIDR + " " + queue,
		"COMMIT",
		"",
	}, "\n")
	restore := exec.Command("iptables-restore", "-w", "--noflush")
	restore.Stdin = strings.NewReader(rules)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, out)
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
