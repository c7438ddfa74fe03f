// Package kubeenv runs a real Kubernetes control plane (etcd and
// kube-apiserver, through controller-runtime's envtest) for meshroot's
// end-to-end tests.
//
// Start gives a Cluster whose apiserver listens on 127.0.0.1 only, signs
// service-account tokens (TokenRequest works; no controller-manager runs, so
// the harness creates ServiceAccounts itself), answers TokenReview, and
// serves its OIDC discovery document and JWKS to anonymous clients on
// 127.0.0.1. Several clusters may run in one test process (each costs about
// 300 MB of memory). Under Main, a test's cluster is reset and reused by
// the next test instead of stopped.
//
// The binaries come from test/tools/build.sh, which builds them once per
// machine into a cache (about 12 minutes on a cold 2-core machine: run
// `test/tools/build.sh kube-apiserver` before `go test`, or raise -timeout).
//
// envtest logs through controller-runtime's logger; a test binary that
// starts a cluster more than 30 s after it began and never called
// sigs.k8s.io/controller-runtime/pkg/log.SetLogger gets a one-time warning
// on stderr. Call SetLogger (logr.Discard() will do) in TestMain to avoid it.
package kubeenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const (
	// KubeVersion is the version of kube-apiserver the harness runs.
	KubeVersion = "v1.37.2"

	// DiscoveryBindingName is the ClusterRoleBinding that grants
	// system:service-account-issuer-discovery to system:unauthenticated, so
	// that the OIDC discovery document and JWKS are readable anonymously.
	DiscoveryBindingName = "kubeenv:service-account-issuer-discovery:unauthenticated"

	startTimeout = 60 * time.Second
	// SIGTERM first; the apiserver may take a few seconds to drain. After
	// stopTimeout the process is killed.
	stopTimeout = 20 * time.Second

	// kubeconfigTokenTTL is the lifetime of the token in KubeconfigFor files.
	kubeconfigTokenTTL = 7 * 24 * time.Hour
	requestTimeout     = 30 * time.Second
)

// Cluster is one running control plane: etcd plus kube-apiserver.
type Cluster struct {
	// Name labels the cluster in logs and temporary paths.
	Name string
	// Config authenticates as an admin (client certificate in system:masters).
	Config *rest.Config
	// Client is a clientset built from Config.
	Client kubernetes.Interface
	// KubeconfigPath is a kubeconfig file (mode 0600) with Config's admin
	// credentials, for tools and subprocesses.
	KubeconfigPath string
	// Issuer is the service-account token issuer (the "iss" claim), by
	// default "https://127.0.0.1:<port>"; its discovery document is at
	// Issuer + "/.well-known/openid-configuration".
	Issuer string
	// CAPEM is the CA certificate that signed the apiserver's serving
	// certificate (for 127.0.0.1 and localhost).
	CAPEM []byte

	// The processes, which a later test may reuse (see Main); each test
	// gets its own Cluster value.
	*controlPlane

	httpOnce   sync.Once
	httpClient *http.Client
}

// controlPlane is one etcd and kube-apiserver pair with its folder.
type controlPlane struct {
	baseURL string // https://127.0.0.1:<port>, no trailing slash
	dir     string
	env     *envtest.Environment
	logs    []*os.File
	reaper  *reaper

	// admin is the admin configuration envtest made; each lease gets a
	// copy as its Config.
	admin *rest.Config
	// kubeconfig is the admin kubeconfig file in dir.
	kubeconfig string
	issuer     string
	// snap is etcd's content when the apiserver was first ready: what a
	// reused cluster is reset to. Nil when the cluster is not reused.
	snap *etcdSnapshot

	mu      sync.Mutex
	stopped bool // the apiserver alone was stopped by StopAPIServer
	// restarted: StopAPIServer was called during the lease, so the
	// cluster is not reused.
	restarted bool
}

// Option changes how Start configures the apiserver.
type Option func(*options)

type options struct {
	trailingSlash bool
	rsaKey        bool
	flags         [][]string
}

// isDefault reports whether no option was given: only such clusters are
// reused between tests.
func (o options) isDefault() bool {
	return !o.trailingSlash && !o.rsaKey && len(o.flags) == 0
}

// WithIssuerTrailingSlash makes the issuer "https://127.0.0.1:<port>/", as
// envtest's own default, to test verifiers against issuers that end in "/".
func WithIssuerTrailingSlash() Option {
	return func(o *options) { o.trailingSlash = true }
}

// WithRSAServiceAccountKey signs service-account tokens with an RSA 2048 key
// (RS256) instead of envtest's ECDSA P-256 key (ES256).
func WithRSAServiceAccountKey() Option {
	return func(o *options) { o.rsaKey = true }
}

// WithAPIServerFlag sets a kube-apiserver flag (name without the leading
// dashes), replacing the harness's value for it if it had one.
func WithAPIServerFlag(name string, values ...string) Option {
	return func(o *options) { o.flags = append(o.flags, append([]string{name}, values...)) }
}

// Start starts etcd and kube-apiserver for the test and stops them (SIGTERM,
// a wait, then SIGKILL) and removes their data in t.Cleanup.
//
// In a test binary whose TestMain runs through Main, a cluster started
// without options is instead reset to its first state and kept for the
// next test that starts one (see Main): same issuer, keys and address,
// none of the earlier test's objects.
func Start(t testing.TB, name string, opts ...Option) *Cluster {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	reusable := reuse.Load() && o.isDefault()
	if reusable {
		if cp := idle.take(); cp != nil {
			c, err := cp.lease(name)
			if err != nil {
				cp.stop(t)
				t.Fatalf("kubeenv: reusing a cluster for %q: %v", name, err)
			}
			t.Cleanup(func() { c.release(t) })
			return c
		}
	}
	bin := binDir(t)
	var errs []error
	// A port picked free can be taken before the apiserver binds it: retry
	// on a new port.
	for attempt := 0; attempt < 3; attempt++ {
		c, err := start(name, bin, o)
		if err == nil {
			if reusable {
				if err := c.takeSnapshot(); err != nil {
					t.Logf("kubeenv: cluster %q will not be reused: %v", name, err)
				}
			}
			t.Cleanup(func() { c.release(t) })
			return c
		}
		errs = append(errs, err)
	}
	t.Fatalf("kubeenv: cluster %q did not start: %v", name, errors.Join(errs...))
	return nil
}

func start(name, bin string, o options) (c *Cluster, err error) {
	dir, err := os.MkdirTemp("", "kubeenv-"+safeName(name)+"-")
	if err != nil {
		return nil, err
	}
	// cl, not c: a `return nil, err` sets c to nil before this runs, and
	// the half-started cluster must still be stopped (Start retries).
	cl := &Cluster{Name: name, controlPlane: &controlPlane{dir: dir}}
	c = cl
	defer func() {
		if err != nil {
			if cl.env != nil {
				_ = cl.env.Stop()
			}
			if tail := cl.logTail(40); tail != "" {
				err = fmt.Errorf("%w\napiserver log (last lines):\n%s", err, tail)
			}
			cl.closeLogs()
			_ = os.RemoveAll(dir)
			cl.reaper.done()
		}
	}()
	// Should this process die without stopping the cluster (a panic, go
	// test's timeout), the reaper stops it.
	if cl.reaper, err = startReaper(dir); err != nil {
		return nil, fmt.Errorf("starting the reaper of %s: %w", dir, err)
	}
	certDir := filepath.Join(dir, "apiserver")
	etcdDir := filepath.Join(dir, "etcd")
	for _, d := range []string{certDir, etcdDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	apiLog, err := c.openLog("apiserver.log")
	if err != nil {
		return nil, err
	}
	etcdLog, err := c.openLog("etcd.log")
	if err != nil {
		return nil, err
	}

	port, err := stablePort()
	if err != nil {
		return nil, err
	}
	c.baseURL = "https://" + net.JoinHostPort("127.0.0.1", port)
	c.issuer = c.baseURL
	if o.trailingSlash {
		c.issuer += "/"
	}

	api := &envtest.APIServer{
		Path:    filepath.Join(bin, "kube-apiserver"),
		CertDir: certDir, // ours, so envtest keeps it (and its keys) across StopAPIServer/StartAPIServer
		Out:     apiLog,
		Err:     apiLog,
	}
	api.SecureServing.Address = "127.0.0.1"
	api.SecureServing.Port = port
	args := api.Configure()
	// Advertise loopback: the default is the machine's external address,
	// which would put the discovery document's jwks_uri off loopback. The
	// endpoint reconciler refuses a loopback advertise address, so turn it
	// off (no "kubernetes" Endpoints are needed here).
	args.Set("advertise-address", "127.0.0.1")
	args.Set("endpoint-reconciler-type", "none")
	args.Set("service-account-issuer", c.issuer)
	args.Set("service-account-jwks-uri", c.baseURL+"/openid/v1/jwks")
	args.Set("anonymous-auth", "true")
	if o.rsaKey {
		pub, key, err := writeRSAKey(certDir)
		if err != nil {
			return nil, err
		}
		args.Set("service-account-key-file", pub)
		args.Set("service-account-signing-key-file", key)
	}
	for _, f := range o.flags {
		args.Set(f[0], f[1:]...)
	}

	c.env = &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer: api,
			Etcd: &envtest.Etcd{
				Path:    filepath.Join(bin, "etcd"),
				DataDir: etcdDir,
				Out:     etcdLog,
				Err:     etcdLog,
			},
		},
		BinaryAssetsDirectory:    bin,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  stopTimeout,
	}
	cfg, err := c.env.Start()
	if err != nil {
		return nil, err
	}
	c.admin = cfg
	c.kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if c, err = c.lease(name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := c.allowAnonymousDiscovery(ctx); err != nil {
		return nil, err
	}
	if err := writeKubeconfig(c.KubeconfigPath, cfg, "admin", func(a *clientcmdapi.AuthInfo) {
		a.ClientCertificateData = cfg.CertData
		a.ClientKeyData = cfg.KeyData
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// lease returns a new Cluster value for a test on these processes (the
// first test's too).
func (cp *controlPlane) lease(name string) (*Cluster, error) {
	cfg := rest.CopyConfig(cp.admin)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Cluster{
		Name:           name,
		Config:         cfg,
		Client:         client,
		KubeconfigPath: cp.kubeconfig,
		Issuer:         cp.issuer,
		CAPEM:          append([]byte(nil), cfg.CAData...),
		controlPlane:   cp,
	}, nil
}

// allowAnonymousDiscovery binds the built-in ClusterRole
// system:service-account-issuer-discovery (non-resource URLs
// /.well-known/openid-configuration and /openid/v1/jwks) to
// system:unauthenticated. By default only authenticated service accounts
// may read them.
func (c *Cluster) allowAnonymousDiscovery(ctx context.Context) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: DiscoveryBindingName},
		RoleRef: rbacv1.RoleRef{
			APIGroup: rbacv1.GroupName,
			Kind:     "ClusterRole",
			Name:     "system:service-account-issuer-discovery",
		},
		Subjects: []rbacv1.Subject{{
			APIGroup: rbacv1.GroupName,
			Kind:     rbacv1.GroupKind,
			Name:     "system:unauthenticated",
		}},
	}
	_, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding issuer discovery to system:unauthenticated: %w", err)
	}
	return nil
}

// waitReady polls /readyz as the admin until it answers ok.
func (c *Cluster) waitReady(ctx context.Context) error {
	var last error
	for {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("/readyz: %q", body)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver of %q not ready: %w", c.Name, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop stops the processes and removes their folder.
func (cp *controlPlane) stop(t testing.TB) {
	if cp.env != nil {
		if err := cp.env.Stop(); err != nil {
			t.Errorf("kubeenv: stopping the cluster in %s: %v", cp.dir, err)
		}
	}
	cp.closeLogs()
	// A process killed after the stop timeout may still be going away.
	for i := 0; ; i++ {
		err := os.RemoveAll(cp.dir)
		if err == nil || i == 20 {
			if err != nil {
				t.Logf("kubeenv: removing %s: %v", cp.dir, err)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cp.reaper.done()
}

// StopAPIServer stops the apiserver (SIGTERM, a wait, then SIGKILL) and
// leaves etcd running, so that StartAPIServer brings the same data back.
// Requests to the cluster fail until then.
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		t.Fatalf("kubeenv: apiserver of %q already stopped", c.Name)
	}
	c.restarted = true // its watch caches and controllers start afresh: not reused
	if err := c.env.ControlPlane.APIServer.Stop(); err != nil {
		t.Fatalf("kubeenv: stopping apiserver of %q: %v", c.Name, err)
	}
	c.stopped = true
}

// StartAPIServer starts the apiserver again, on the same address, with the
// same serving certificate, client CA, service-account signing key and
// etcd, and waits until it is ready. Config, Client, kubeconfig files and
// tokens issued before the stop keep working.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		t.Fatalf("kubeenv: apiserver of %q is running", c.Name)
	}
	if err := c.env.ControlPlane.APIServer.Start(); err != nil {
		t.Fatalf("kubeenv: restarting apiserver of %q on %s: %v\n%s", c.Name, c.baseURL, err, c.logTail(40))
	}
	c.stopped = false
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.waitReady(ctx); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
}

// EnsureNamespace creates the namespace if it does not exist.
func (c *Cluster) EnsureNamespace(t testing.TB, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubeenv: creating namespace %s in %q: %v", ns, c.Name, err)
	}
}

// EnsureServiceAccount creates the namespace and the ServiceAccount if they
// do not exist (no controller-manager runs to do it).
func (c *Cluster) EnsureServiceAccount(t testing.TB, namespace, name string) {
	t.Helper()
	c.EnsureNamespace(t, namespace)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	_, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubeenv: creating service account %s/%s in %q: %v", namespace, name, c.Name, err)
	}
}

// ServiceAccountToken returns a token for namespace/name from the
// TokenRequest API, creating the namespace and ServiceAccount if missing.
// An empty audience gets the apiserver's own audience (the issuer); a zero
// ttl the apiserver's default (1 h). The apiserver refuses a ttl under
// 10 minutes.
func (c *Cluster) ServiceAccountToken(t testing.TB, namespace, name, audience string, ttl time.Duration) string {
	t.Helper()
	c.EnsureServiceAccount(t, namespace, name)
	tok, err := c.requestToken(namespace, name, audience, ttl)
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	return tok
}

func (c *Cluster) requestToken(namespace, name, audience string, ttl time.Duration) (string, error) {
	req := &authenticationv1.TokenRequest{}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	if ttl != 0 {
		secs := int64(ttl / time.Second)
		req.Spec.ExpirationSeconds = &secs
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s (audience %q, ttl %s) in %q: %w", namespace, name, audience, ttl, c.Name, err)
	}
	return resp.Status.Token, nil
}

// KubeconfigFor writes a kubeconfig file (mode 0600) that authenticates as
// the ServiceAccount namespace/name with a TokenRequest token valid for a
// week, creating the namespace and ServiceAccount if missing, and returns
// its path. It grants nothing: bind Roles for RBAC tests.
func (c *Cluster) KubeconfigFor(t testing.TB, namespace, serviceAccount string) string {
	t.Helper()
	c.EnsureServiceAccount(t, namespace, serviceAccount)
	tok, err := c.requestToken(namespace, serviceAccount, "", kubeconfigTokenTTL)
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	path := filepath.Join(c.dir, "sa-"+safeName(namespace)+"-"+safeName(serviceAccount)+".kubeconfig")
	user := "system:serviceaccount:" + namespace + ":" + serviceAccount
	if err := writeKubeconfig(path, c.Config, user, func(a *clientcmdapi.AuthInfo) { a.Token = tok }); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	return path
}

// HTTPClient returns an HTTP client with no credentials that trusts CAPEM:
// an anonymous client of the apiserver.
func (c *Cluster) HTTPClient() *http.Client {
	c.httpOnce.Do(func() {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(c.CAPEM)
		c.httpClient = &http.Client{
			Timeout: requestTimeout,
			Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			},
		}
	})
	return c.httpClient
}

// JWKS returns the apiserver's service-account JWKS (/openid/v1/jwks),
// fetched anonymously. Note for clients: kube-apiserver serves it as
// application/jwk-set+json and answers 406 to a request whose Accept header
// allows only application/json (no Accept header, or */*, is fine).
func (c *Cluster) JWKS(t testing.TB) []byte {
	t.Helper()
	return c.getAnonymous(t, "/openid/v1/jwks")
}

// OpenIDConfiguration returns the OIDC discovery document
// (/.well-known/openid-configuration), fetched anonymously.
func (c *Cluster) OpenIDConfiguration(t testing.TB) []byte {
	t.Helper()
	return c.getAnonymous(t, "/.well-known/openid-configuration")
}

func (c *Cluster) getAnonymous(t testing.TB, path string) []byte {
	t.Helper()
	resp, err := c.HTTPClient().Get(c.baseURL + path)
	if err != nil {
		t.Fatalf("kubeenv: GET %s on %q: %v", path, c.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("kubeenv: reading %s from %q: %v", path, c.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("kubeenv: GET %s on %q: %s: %s", path, c.Name, resp.Status, body)
	}
	return body
}

func writeKubeconfig(path string, cfg *rest.Config, user string, auth func(*clientcmdapi.AuthInfo)) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubeenv"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	a := clientcmdapi.NewAuthInfo()
	auth(a)
	kc.AuthInfos[user] = a
	kc.Contexts["kubeenv"] = &clientcmdapi.Context{Cluster: "kubeenv", AuthInfo: user}
	kc.CurrentContext = "kubeenv"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	// Write to a new file and rename, so the mode is 0600 from the start.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kubeconfig-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeRSAKey(dir string) (pubPath, keyPath string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", err
	}
	keyPath = filepath.Join(dir, "sa-rsa.key")
	pubPath = filepath.Join(dir, "sa-rsa.pub")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return "", "", err
	}
	return pubPath, keyPath, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func (c *controlPlane) openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(c.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	c.logs = append(c.logs, f)
	return f, nil
}

func (c *controlPlane) closeLogs() {
	for _, f := range c.logs {
		_ = f.Close()
	}
	c.logs = nil
}

// logTail returns the last n lines of the apiserver's log.
func (c *controlPlane) logTail(n int) string {
	data, err := os.ReadFile(filepath.Join(c.dir, "apiserver.log"))
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func safeName(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	if len(s) > 40 {
		s = s[:40]
	}
	if s == "" {
		s = "cluster"
	}
	return s
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binDir runs test/tools/build.sh kube-apiserver (fast when the binaries
// are cached, a long build on a cold machine) and returns the folder that
// holds kube-apiserver and etcd.
func binDir(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = buildTools() })
	if binErr != nil {
		t.Fatalf("kubeenv: %v", binErr)
	}
	return binPath
}

func buildTools() (string, error) {
	script, err := findBuildScript()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script, "kube-apiserver")
	cmd.Stdout = &stdout
	// Progress of a cold build goes to the test's stderr as well.
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s kube-apiserver: %v\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := filepath.Join(strings.TrimSpace(lines[len(lines)-1]), "kube-"+KubeVersion)
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
			return "", fmt.Errorf("%s printed %q, but %s is not in %s", script, lines[len(lines)-1], b, dir)
		}
	}
	return dir, nil
}

// BuildScript returns the path of test/tools/build.sh, for harnesses of
// other tools (istiodenv) that build through the same script: from
// $MESHROOT_BUILD_SH, this source file's location, or upwards from the
// working directory.
func BuildScript() (string, error) { return findBuildScript() }

// findBuildScript locates test/tools/build.sh: from this source file (when
// built without -trimpath), else upwards from the working directory.
func findBuildScript() (string, error) {
	const rel = "test/tools/build.sh"
	if env := os.Getenv("MESHROOT_BUILD_SH"); env != "" {
		return env, nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", "tools", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s not found above %s (set MESHROOT_BUILD_SH)", rel, wd)
		}
	}
}
