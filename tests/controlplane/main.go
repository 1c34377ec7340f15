// Command controlplane runs a single-process Kubernetes control plane for the
// project's tests and lab: kube-apiserver, kube-controller-manager and
// kube-scheduler from k8s.io/kubernetes, backed by kine on SQLite, the datastore
// k3s uses by default. Called as kubelet, kube-proxy, containerd or ctr (node.go)
// it is that node program instead, the way k3s packs its parts.
//
// It applies the API server settings the k3s role configures (Pod Security
// admission defaults, audit policy and log, secrets encryption at rest), serves
// HTTPS on --bind-address only and writes an admin kubeconfig into the data directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

const shutdownBudget = 30 * time.Second

type settings struct {
	dataDir         string
	bindAddress     string
	securePort      int
	clusterCIDR     string
	serviceCIDR     string
	admissionConfig string
	auditPolicy     string
	verbosity       int
}

func main() {
	if runComponent(os.Args) {
		return
	}
	var s settings
	fs := flag.NewFlagSet("controlplane", flag.ExitOnError)
	fs.StringVar(&s.dataDir, "data-dir", "", "directory for the datastore, certificates, kubeconfig and audit log (required)")
	fs.StringVar(&s.bindAddress, "bind-address", "127.0.0.1", "the one address the API server listens on and the kubeconfigs name; nodes in containers need one they can reach, such as their network's gateway")
	fs.IntVar(&s.securePort, "secure-port", 6443, "HTTPS port of the API server")
	fs.StringVar(&s.clusterCIDR, "cluster-cidr", "10.42.0.0/16", "the pods' range, split into one range per node (k3s's default)")
	fs.StringVar(&s.serviceCIDR, "service-cidr", "10.43.0.0/16", "the Services' range (k3s's default)")
	fs.StringVar(&s.admissionConfig, "admission-config-file", "", "AdmissionConfiguration file (default: the built-in copy of the k3s role's)")
	fs.StringVar(&s.auditPolicy, "audit-policy-file", "", "audit Policy file (default: the built-in copy of the k3s role's)")
	fs.IntVar(&s.verbosity, "v", 0, "log verbosity of the Kubernetes components")
	_ = fs.Parse(os.Args[1:])
	if ip := net.ParseIP(s.bindAddress); ip == nil || ip.IsUnspecified() {
		fmt.Fprintf(os.Stderr, "controlplane: --bind-address %q is not one address to listen on\n", s.bindAddress)
		os.Exit(2)
	}
	for _, cidr := range []string{s.clusterCIDR, s.serviceCIDR} {
		if _, network, err := net.ParseCIDR(cidr); err != nil || network.IP.To4() == nil || maskSize(network) > 30 {
			fmt.Fprintf(os.Stderr, "controlplane: %q is not an IPv4 range of at least 4 addresses\n", cidr)
			os.Exit(2)
		}
	}
	if s.dataDir == "" {
		fmt.Fprintln(os.Stderr, "controlplane: --data-dir is required")
		os.Exit(2)
	}
	if err := run(s); err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		os.Exit(1)
	}
}

func run(s settings) error {
	dataDir, err := filepath.Abs(s.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	files, err := prepareFiles(dataDir, s)
	if err != nil {
		return fmt.Errorf("preparing certificates and configuration: %w", err)
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	// The datastore outlives the Kubernetes components so that their graceful
	// shutdown can still reach it.
	storeCtx, stopStore := context.WithCancel(context.Background())
	defer stopStore()
	var storeWG sync.WaitGroup
	etcdEndpoint, err := startKine(storeCtx, &storeWG, files)
	if err != nil {
		return fmt.Errorf("starting kine: %w", err)
	}
	klog.InfoS("Datastore ready", "endpoint", etcdEndpoint, "db", files.sqliteDB)

	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	kcmCtx, stopKCM := context.WithCancel(context.Background())
	defer stopKCM()
	schedCtx, stopSched := context.WithCancel(context.Background())
	defer stopSched()
	errs := make(chan error, 3)
	var apiWG, kcmWG, schedWG sync.WaitGroup
	stopAll := func(cause error) error {
		return shutdown(cause, []stage{
			{"kube-scheduler", stopSched, &schedWG},
			{"kube-controller-manager", stopKCM, &kcmWG},
			{"kube-apiserver", stopAPI, &apiWG},
			{"kine", stopStore, &storeWG},
		})
	}
	// kube-controller-manager calls klog.FlushAndExit when it loses the API server
	// while still building its controllers; during shutdown that must end only its
	// own goroutine, not the process with status 1.
	klog.OsExit = func(code int) {
		if kcmCtx.Err() != nil || schedCtx.Err() != nil {
			runtime.Goexit()
		}
		os.Exit(code)
	}

	apiArgs := apiServerArgs(s, files, etcdEndpoint)
	apiOpts, err := newAPIServer(apiArgs, s.verbosity)
	if err != nil {
		return stopAll(fmt.Errorf("kube-apiserver options: %w", err))
	}
	apiWG.Add(1)
	go func() {
		defer apiWG.Done()
		if err := apiOpts.run(apiCtx); err != nil {
			errs <- fmt.Errorf("kube-apiserver: %w", err)
		}
	}()

	started := time.Now()
	if err := waitReady(sigCtx, apiCtx, s.apiURL(), files); err != nil {
		return stopAll(err)
	}
	klog.InfoS("API server ready", "after", time.Since(started).Round(time.Millisecond))

	if err := writeKubeconfig(files.kcmKubeconfig, s.apiURL(), files, files.kcmCert, files.kcmKey); err != nil {
		return stopAll(err)
	}
	kcmWG.Add(1)
	go func() {
		defer kcmWG.Done()
		if err := runControllerManager(kcmCtx, controllerManagerArgs(s, files)); err != nil {
			errs <- fmt.Errorf("kube-controller-manager: %w", err)
		}
	}()

	if err := writeKubeconfig(files.schedulerKubeconfig, s.apiURL(), files, files.schedulerCert, files.schedulerKey); err != nil {
		return stopAll(err)
	}
	schedWG.Add(1)
	go func() {
		defer schedWG.Done()
		if err := runScheduler(schedCtx, schedulerArgs(files)); err != nil {
			errs <- fmt.Errorf("kube-scheduler: %w", err)
		}
	}()

	if err := writeKubeconfig(files.adminKubeconfig, s.apiURL(), files, files.adminCert, files.adminKey); err != nil {
		return stopAll(err)
	}
	fmt.Printf("controlplane ready: kubeconfig=%s\n", files.adminKubeconfig)

	var runErr error
	select {
	case <-sigCtx.Done():
		klog.InfoS("Signal received, shutting down")
	case runErr = <-errs:
		klog.ErrorS(runErr, "Component stopped, shutting down")
	}
	return stopAll(runErr)
}

func maskSize(network *net.IPNet) int {
	ones, _ := network.Mask.Size()
	return ones
}

func (s settings) apiURL() string {
	return "https://" + net.JoinHostPort(s.bindAddress, strconv.Itoa(s.securePort))
}

type stage struct {
	name string
	stop context.CancelFunc
	wg   *sync.WaitGroup
}

// shutdown stops the stages in order (controllers, API server, datastore), each
// after the previous one has returned, all within shutdownBudget so a stuck
// component cannot hold the process.
func shutdown(cause error, stages []stage) error {
	deadline := time.After(shutdownBudget)
	for _, st := range stages {
		st.stop()
		if !waitGroupWithin(st.wg, deadline) {
			return errors.Join(cause, fmt.Errorf("%s did not stop within %s", st.name, shutdownBudget))
		}
	}
	klog.Flush()
	return cause
}

func waitGroupWithin(wg *sync.WaitGroup, deadline <-chan time.Time) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-deadline:
		return false
	}
}
