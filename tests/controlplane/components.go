package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apiserver/pkg/server/flagz"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

// apiServerArgs mirrors the kube-apiserver arguments k3s passes (service and
// cluster ranges, Node,RBAC authorization, no anonymous access) plus the
// hardening the k3s role adds through kube-apiserver-arg.
func apiServerArgs(s settings, f *files, etcdEndpoint string) []string {
	args := []string{
		"--advertise-address=" + s.bindAddress,
		"--bind-address=" + s.bindAddress,
		"--secure-port=" + strconv.Itoa(s.securePort),
		"--etcd-servers=" + etcdEndpoint,
		"--storage-backend=etcd3",
		"--tls-cert-file=" + f.servingCert,
		"--tls-private-key-file=" + f.servingKey,
		"--client-ca-file=" + f.caCert,
		"--service-account-key-file=" + f.saPub,
		"--service-account-signing-key-file=" + f.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local,k3s",
		"--service-cluster-ip-range=" + s.serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--anonymous-auth=false",
		"--allow-privileged=true",
		"--enable-admission-plugins=NodeRestriction,EventRateLimit",
		"--service-account-lookup=true",
		"--request-timeout=300s",
		"--admission-control-config-file=" + f.admission,
		"--encryption-provider-config=" + f.encryption,
		"--audit-policy-file=" + f.auditPolicy,
		"--audit-log-path=" + f.auditLog,
		"--audit-log-maxage=30",
		"--audit-log-maxbackup=10",
		"--audit-log-maxsize=100",
		"--profiling=false",
		"--enable-priority-and-fairness=true",
		// For logs, exec and port-forward through the nodes' kubelets.
		"--kubelet-client-certificate=" + f.kubeletClientCert,
		"--kubelet-client-key=" + f.kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP",
	}
	// The kubernetes Service cannot point at a loopback address: pods reach the
	// API through it only when the server listens where they can reach it.
	if net.ParseIP(s.bindAddress).IsLoopback() {
		args = append(args, "--endpoint-reconciler-type=none")
	}
	return args
}

type apiServer struct {
	completed apiserveroptions.CompletedOptions
}

// newAPIServer does what kube-apiserver's cobra command does before Run, minus
// its process-wide signal handler: this process owns the signals.
func newAPIServer(args []string, verbosity int) (*apiServer, error) {
	s := apiserveroptions.NewServerRunOptions()
	namedFlagSets := s.Flags()
	s.Flagz = flagz.NamedFlagSetsReader{FlagSets: namedFlagSets}
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, set := range namedFlagSets.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	s.Logs.Verbosity = logsapi.VerbosityLevel(verbosity)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return nil, err
	}
	completed, err := s.Complete(context.Background())
	if err != nil {
		return nil, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return nil, utilerrors.NewAggregate(errs)
	}
	featureGate.(featuregate.MutableFeatureGate).AddMetrics()
	return &apiServer{completed: completed}, nil
}

func (a *apiServer) run(ctx context.Context) error {
	return apiserverapp.Run(ctx, a.completed)
}

// waitReady polls /readyz with the admin client certificate.
func waitReady(sigCtx, cpCtx context.Context, apiURL string, f *files) error {
	caPEM, err := os.ReadFile(f.caCert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	clientCert, err := tls.LoadX509KeyPair(f.adminCert, f.adminKey)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{clientCert},
			MinVersion:   tls.VersionTLS12,
		}},
	}
	url := apiURL + "/readyz"
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-sigCtx.Done():
			return errors.New("interrupted before the API server was ready")
		case <-cpCtx.Done():
			return errors.New("stopped before the API server was ready")
		case <-time.After(250 * time.Millisecond):
		}
		resp, err := client.Get(url)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return errors.New("API server not ready after 3 minutes")
}

// controllerManagerArgs mirrors k3s's kube-controller-manager arguments:
// per-controller service account credentials, the cluster CIDR, the cluster
// CA as signer; no leader election (single process) and no serving port.
func controllerManagerArgs(s settings, f *files) []string {
	return []string{
		"--kubeconfig=" + f.kcmKubeconfig,
		"--authentication-kubeconfig=" + f.kcmKubeconfig,
		"--authorization-kubeconfig=" + f.kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + f.saKey,
		"--root-ca-file=" + f.caCert,
		"--cluster-signing-cert-file=" + f.caCert,
		"--cluster-signing-key-file=" + f.caKey,
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + s.clusterCIDR,
		"--service-cluster-ip-range=" + s.serviceCIDR,
		"--terminated-pod-gc-threshold=10",
		"--profiling=false",
	}
}

func runControllerManager(ctx context.Context, args []string) error {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	namedFlagSets := s.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	s.ParsedFlags = &namedFlagSets
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, set := range namedFlagSets.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	c, err := s.Config(ctx, kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	if err != nil {
		return err
	}
	return kcmapp.Run(ctx, c.Complete())
}
