package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

//go:embed testdata/config/admission-config.yaml
var defaultAdmissionConfig []byte

//go:embed testdata/config/audit-policy.yaml
var defaultAuditPolicy []byte

// files are the paths the control plane reads and writes under its data dir.
type files struct {
	dir                 string
	sqliteDB            string
	kineSocket          string
	caCert, caKey       string
	servingCert         string
	servingKey          string
	adminCert           string
	adminKey            string
	kcmCert, kcmKey     string
	schedulerCert       string
	schedulerKey        string
	kubeletClientCert   string
	kubeletClientKey    string
	saKey, saPub        string
	encryption          string
	admission           string
	auditPolicy         string
	auditLog            string
	adminKubeconfig     string
	kcmKubeconfig       string
	schedulerKubeconfig string
}

func newFiles(dir string) *files {
	p := func(name string) string { return filepath.Join(dir, name) }
	return &files{
		dir:                 dir,
		sqliteDB:            p("db/state.db"),
		kineSocket:          p("kine.sock"),
		caCert:              p("tls/ca.crt"),
		caKey:               p("tls/ca.key"),
		servingCert:         p("tls/serving.crt"),
		servingKey:          p("tls/serving.key"),
		adminCert:           p("tls/admin.crt"),
		adminKey:            p("tls/admin.key"),
		kcmCert:             p("tls/controller-manager.crt"),
		kcmKey:              p("tls/controller-manager.key"),
		schedulerCert:       p("tls/scheduler.crt"),
		schedulerKey:        p("tls/scheduler.key"),
		kubeletClientCert:   p("tls/apiserver-kubelet-client.crt"),
		kubeletClientKey:    p("tls/apiserver-kubelet-client.key"),
		saKey:               p("tls/service-account.key"),
		saPub:               p("tls/service-account.pub"),
		encryption:          p("config/encryption-config.yaml"),
		admission:           p("config/admission-config.yaml"),
		auditPolicy:         p("config/audit-policy.yaml"),
		auditLog:            p("logs/audit.log"),
		adminKubeconfig:     p("kubeconfig"),
		kcmKubeconfig:       p("config/controller-manager.kubeconfig"),
		schedulerKubeconfig: p("config/scheduler.kubeconfig"),
	}
}

// prepareFiles creates what is missing; an existing data dir keeps its keys so
// a restart can still read what it encrypted.
func prepareFiles(dir string, s settings) (*files, error) {
	f := newFiles(dir)
	for _, sub := range []string{"db", "tls", "config", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := copyOrDefault(s.admissionConfig, defaultAdmissionConfig, f.admission); err != nil {
		return nil, err
	}
	if err := copyOrDefault(s.auditPolicy, defaultAuditPolicy, f.auditPolicy); err != nil {
		return nil, err
	}
	if !exists(f.encryption) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(f.encryption, []byte(encryptionConfig(key)), 0o600); err != nil {
			return nil, err
		}
	}
	if err := prepareCerts(f, s); err != nil {
		return nil, err
	}
	return f, nil
}

func copyOrDefault(src string, fallback []byte, dst string) error {
	data := fallback
	if src != "" {
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return err
		}
	}
	return os.WriteFile(dst, data, 0o600)
}

// encryptionConfig encrypts Secrets with aescbc and a key named aescbckey, as
// k3s's secrets-encryption does by default; identity stays last so the server
// can still read anything written before encryption was turned on.
func encryptionConfig(key []byte) string {
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aescbc:
          keys:
            - name: aescbckey
              secret: %s
      - identity: {}
`, base64.StdEncoding.EncodeToString(key))
}

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func prepareCerts(f *files, s settings) error {
	var ca keyPair
	if exists(f.caCert) && exists(f.caKey) {
		loaded, err := loadKeyPair(f.caCert, f.caKey)
		if err != nil {
			return err
		}
		ca = loaded
	} else {
		created, err := newCert(nil, &x509.Certificate{
			Subject:               pkix.Name{CommonName: "controlplane-test-ca"},
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		}, f.caCert, f.caKey)
		if err != nil {
			return err
		}
		ca = created
	}

	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP(s.bindAddress), kubernetesServiceIP(s.serviceCIDR)},
	}
	// Made at every start: the address it names may have changed; clients trust the CA.
	if _, err := newCert(&ca, serving, f.servingCert, f.servingKey); err != nil {
		return err
	}
	clients := []struct {
		tmpl     *x509.Certificate
		crt, key string
	}{
		{clientTemplate("admin", "system:masters"), f.adminCert, f.adminKey},
		{clientTemplate("system:kube-controller-manager", ""), f.kcmCert, f.kcmKey},
		{clientTemplate("system:kube-scheduler", ""), f.schedulerCert, f.schedulerKey},
		{clientTemplate("kube-apiserver-kubelet-client", "system:masters"), f.kubeletClientCert, f.kubeletClientKey},
	}
	for _, c := range clients {
		if exists(c.crt) && exists(c.key) {
			continue
		}
		if _, err := newCert(&ca, c.tmpl, c.crt, c.key); err != nil {
			return err
		}
	}

	if !exists(f.saKey) || !exists(f.saPub) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if err := writeKey(f.saKey, key); err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// kubernetesServiceIP is the first address of the Services' range (an IPv4
// range of at least 4 addresses, main checks), the one the API server gives
// the kubernetes Service.
func kubernetesServiceIP(serviceCIDR string) net.IP {
	_, network, _ := net.ParseCIDR(serviceCIDR)
	ip := network.IP.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]|1)
}

func clientTemplate(cn, org string) *x509.Certificate {
	subject := pkix.Name{CommonName: cn}
	if org != "" {
		subject.Organization = []string{org}
	}
	return &x509.Certificate{
		Subject:     subject,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func newCert(ca *keyPair, tmpl *x509.Certificate, crtPath, keyPath string) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return keyPair{}, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	if err := os.WriteFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return keyPair{}, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func loadKeyPair(crtPath, keyPath string) (keyPair, error) {
	crtPEM, err := os.ReadFile(crtPath)
	if err != nil {
		return keyPair{}, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return keyPair{}, err
	}
	crtBlock, _ := pem.Decode(crtPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if crtBlock == nil || keyBlock == nil {
		return keyPair{}, errors.New("unreadable CA files in " + filepath.Dir(crtPath))
	}
	cert, err := x509.ParseCertificate(crtBlock.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	key, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

// writeKubeconfig embeds the CA and client credentials so the file works on
// its own, like the kubeconfig k3s writes.
func writeKubeconfig(path, apiURL string, f *files, crtPath, keyPath string) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return base64.StdEncoding.EncodeToString(b), err
	}
	ca, err := read(f.caCert)
	if err != nil {
		return err
	}
	crt, err := read(crtPath)
	if err != nil {
		return err
	}
	key, err := read(keyPath)
	if err != nil {
		return err
	}
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: controlplane
    cluster:
      server: %s
      certificate-authority-data: %s
users:
  - name: controlplane
    user:
      client-certificate-data: %s
      client-key-data: %s
contexts:
  - name: controlplane
    context:
      cluster: controlplane
      user: controlplane
current-context: controlplane
`, apiURL, ca, crt, key)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
