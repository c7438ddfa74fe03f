// Package istiodenv runs a real istiod (Istio's pilot-discovery) against a
// kubeenv cluster's real kube-apiserver, for meshroot's end-to-end tests.
//
// Start applies the Istio CRDs from the pinned istio.io/istio module's
// manifests, creates istio-system, and runs pilot-discovery on 127.0.0.1
// with free ports, its own ctrlz port, and a working directory whose
// ./etc/cacerts is a SecretVolume that the harness keeps in sync with the
// cluster's istio-system/cacerts Secret the way the kubelet does (new
// timestamped folder, atomic rename of "..data"), optionally lagging behind
// it or paused. Workload gets certificates from istiod's CA service as
// istio-agent does.
//
// The binary comes from test/tools/build.sh istiod, which builds it once
// per machine into the tool cache (about 7.5 CPU-minutes after
// istiosigner: 7 to 14 minutes of wall time on 2 cores, by load). With MESHROOT_SKIP_ISTIOD=1 it is
// not built, and tests that need it skip when it is absent.
package istiodenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

const (
	// IstioVersion is the istio.io/istio version istiod is built from (the
	// same as test/tools/istiosigner's).
	IstioVersion = "v0.0.0-20260827124520-eed52ebb66ad"
	// Namespace is istiod's namespace, where it reads the cacerts Secret.
	Namespace = "istio-system"
	// SecretName is the Secret the harness mirrors into ./etc/cacerts.
	SecretName = "cacerts"
	// ServerName is the name istiod's secure gRPC serving certificate
	// carries (and the name a workload checks).
	ServerName = "istiod.istio-system.svc"
	// RootCertConfigMap is the ConfigMap istiod writes into every
	// namespace with the roots workloads trust (key "root-cert.pem").
	RootCertConfigMap = "istio-ca-root-cert"

	crdFile      = "manifests/charts/base/files/crd-all.gen.yaml"
	startTimeout = 90 * time.Second
	stopTimeout  = 10 * time.Second
)

// Istiod is one running pilot-discovery for one cluster.
type Istiod struct {
	// Cluster is the cluster whose kube-apiserver istiod watches.
	Cluster *kubeenv.Cluster
	// Name is the pod name istiod is given (POD_NAME).
	Name string
	// TrustDomain is the mesh config's trust domain: workload SPIFFE IDs
	// are spiffe://TrustDomain/ns/NS/sa/SA.
	TrustDomain string
	// Dir is istiod's working directory; CACertsDir is Dir/etc/cacerts.
	Dir, CACertsDir string
	// HTTPAddr (/ready, /debug), GRPCAddr (plain XDS), SecureGRPCAddr (XDS
	// and the CA service over TLS), HTTPSAddr (webhooks), MonitoringAddr
	// (/metrics) and CtrlzAddr: all on 127.0.0.1.
	HTTPAddr, GRPCAddr, SecureGRPCAddr, HTTPSAddr, MonitoringAddr, CtrlzAddr string
	// Volume is ./etc/cacerts, written only by the harness's syncer.
	Volume *SecretVolume

	bin     string
	env     []string
	args    []string
	logPath string
	sync    *syncer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Option changes how Start runs istiod.
type Option func(*options)

type options struct {
	multiRoot   bool
	lag         time.Duration
	trustDomain string
	env         []string
}

// WithMultiRoot sets ISTIO_MULTIROOT_MESH=true, without which istiod
// refuses a changed root set at runtime ("Multi root is disabled").
func WithMultiRoot() Option { return func(o *options) { o.multiRoot = true } }

// WithSyncLag makes ./etc/cacerts show the newest version of the cacerts
// Secret that is at least d old (the kubelet's lag is commonly 60-90 s).
// SetSyncLag changes it later.
func WithSyncLag(d time.Duration) Option { return func(o *options) { o.lag = d } }

// WithTrustDomain sets the mesh config's trustDomain (default
// "cluster.local"). It must match the trust domain of the plugged CA when
// its intermediate carries name constraints.
func WithTrustDomain(td string) Option { return func(o *options) { o.trustDomain = td } }

// WithEnv adds environment variables (KEY=VALUE) to istiod's, after the
// harness's own (a later one wins).
func WithEnv(kv ...string) Option { return func(o *options) { o.env = append(o.env, kv...) } }

// Start runs istiod for cluster c and stops it in t.Cleanup. The
// istio-system/cacerts Secret must exist or appear within the start
// timeout: istiod starts only once ./etc/cacerts holds it (without it,
// istiod would make a self-signed CA of its own). It returns when /ready
// answers 200.
func Start(t testing.TB, c *kubeenv.Cluster, opts ...Option) *Istiod {
	t.Helper()
	o := options{trustDomain: "cluster.local"}
	for _, opt := range opts {
		opt(&o)
	}
	bin := Binary(t)
	InstallCRDs(t, c)
	c.EnsureNamespace(t, Namespace)

	d := &Istiod{Cluster: c, Name: "istiod-" + safeName(c.Name), TrustDomain: o.trustDomain, bin: bin}
	d.Dir = t.TempDir()
	d.CACertsDir = filepath.Join(d.Dir, "etc", "cacerts")
	d.Volume = &SecretVolume{Dir: d.CACertsDir}
	d.logPath = filepath.Join(d.Dir, "istiod.log")
	meshDir := filepath.Join(d.Dir, "etc", "istio", "config")
	if err := os.MkdirAll(meshDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(meshDir, "mesh"), []byte("trustDomain: "+o.trustDomain+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	d.sync = newSyncer(c.Client, Namespace, SecretName, d.Volume, o.lag)
	go d.sync.run(ctx)
	t.Cleanup(func() {
		d.Stop(t)
		cancel()
		<-d.sync.stopped
		if t.Failed() {
			t.Logf("istiodenv: %s log (last lines):\n%s", d.Name, d.LogTail(60))
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, startTimeout+o.lag)
	err := d.sync.waitFor(wctx, "")
	wcancel()
	if err != nil {
		t.Fatalf("istiodenv: no %s/%s Secret reached %s of cluster %q: %v", Namespace, SecretName, d.CACertsDir, c.Name, err)
	}

	var errs []error
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken before istiod binds it
		began := time.Now()
		if err := d.start(o); err != nil {
			errs = append(errs, err)
			d.Stop(t)
			continue
		}
		t.Logf("istiodenv: %s ready in %s (secure gRPC %s)", d.Name, time.Since(began).Round(10*time.Millisecond), d.SecureGRPCAddr)
		return d
	}
	t.Fatalf("istiodenv: istiod for cluster %q did not start: %v\nlog (last lines):\n%s", c.Name, errors.Join(errs...), d.LogTail(40))
	return nil
}

func (d *Istiod) start(o options) error {
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	addr := func(p string) string { return net.JoinHostPort("127.0.0.1", p) }
	d.HTTPAddr, d.GRPCAddr, d.SecureGRPCAddr = addr(ports[0]), addr(ports[1]), addr(ports[2])
	d.HTTPSAddr, d.MonitoringAddr, d.CtrlzAddr = addr(ports[3]), addr(ports[4]), addr(ports[5])
	multi := "false"
	if o.multiRoot {
		multi = "true"
	}
	d.env = append(cleanEnv(),
		"KUBECONFIG="+d.Cluster.KubeconfigPath,
		"POD_NAMESPACE="+Namespace,
		"POD_NAME="+d.Name,
		"REVISION=default",
		"PILOT_CERT_PROVIDER=istiod",
		"ENABLE_CA_SERVER=true",
		"ISTIO_MULTIROOT_MESH="+multi,
	)
	d.env = append(d.env, o.env...)
	d.args = []string{"discovery",
		"--kubeconfig", d.Cluster.KubeconfigPath,
		"--domain", "cluster.local",
		"--httpAddr", d.HTTPAddr,
		"--httpsAddr", d.HTTPSAddr,
		"--grpcAddr", d.GRPCAddr,
		"--secureGRPCAddr", d.SecureGRPCAddr,
		"--monitoringAddr", d.MonitoringAddr,
		"--ctrlz_address", "127.0.0.1",
		"--ctrlz_port", ports[5],
		"--shutdownDuration", "1s",
	}
	return d.launch()
}

// launch starts the process with d's arguments and waits for /ready.
func (d *Istiod) launch() error {
	f, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin, d.args...)
	cmd.Dir = d.Dir
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", d.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		select {
		case <-done:
			return fmt.Errorf("istiod exited before it was ready: %v", cmd.ProcessState)
		default:
		}
		resp, err := client.Get("http://" + d.HTTPAddr + "/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/ready: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("istiod not ready within %s: %w", startTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops istiod: SIGTERM, then SIGKILL if it has not exited after 10 s.
// Stopping a stopped istiod does nothing. The volume syncer keeps running.
func (d *Istiod) Stop(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		t.Logf("istiodenv: %s did not stop within %s of SIGTERM; killing it", d.Name, stopTimeout)
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops istiod and starts it again on the same ports and working
// directory (a new pod, as a rollout would make), and waits for /ready.
func (d *Istiod) Restart(t testing.TB) {
	t.Helper()
	d.Stop(t)
	if err := d.launch(); err != nil {
		t.Fatalf("istiodenv: restarting %s: %v\nlog (last lines):\n%s", d.Name, err, d.LogTail(40))
	}
}

// Running reports whether the istiod process is running.
func (d *Istiod) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// PauseSync stops ./etc/cacerts from following the Secret (the missed
// kubelet update): istiod keeps what it has until ResumeSync.
func (d *Istiod) PauseSync() {
	d.sync.mu.Lock()
	d.sync.paused = true
	d.sync.mu.Unlock()
}

// ResumeSync lets the volume follow the Secret again (with the lag).
func (d *Istiod) ResumeSync() {
	d.sync.mu.Lock()
	d.sync.paused = false
	d.sync.mu.Unlock()
}

// SetSyncLag changes how far the volume lags behind the Secret.
func (d *Istiod) SetSyncLag(lag time.Duration) {
	d.sync.mu.Lock()
	d.sync.lag = lag
	d.sync.mu.Unlock()
}

// Synced returns the Secret's resourceVersion the volume holds, when it
// was written, and how many times the volume was written (the first
// included).
func (d *Istiod) Synced() (resourceVersion string, at time.Time, syncs int) {
	rv, at, n, _ := d.sync.state()
	return rv, at, n
}

// WaitSynced waits until the volume holds the cacerts Secret's current
// version (at most timeout) and returns that resourceVersion.
func (d *Istiod) WaitSynced(t testing.TB, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sec, err := d.Cluster.Client.CoreV1().Secrets(Namespace).Get(ctx, SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("istiodenv: reading %s/%s in %q: %v", Namespace, SecretName, d.Cluster.Name, err)
	}
	if err := d.sync.waitFor(ctx, sec.ResourceVersion); err != nil {
		t.Fatalf("istiodenv: %s: %v", d.Name, err)
	}
	return sec.ResourceVersion
}

// LogTail returns the last n lines of istiod's log.
func (d *Istiod) LogTail(n int) string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 2*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns istiod's whole log so far.
func (d *Istiod) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// --- small helpers ---

// cleanEnv is this process's environment without variables istiod would
// take as its own configuration from the test's environment.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "KUBECONFIG", k == "ROOT_CA_DIR", strings.HasPrefix(k, "PILOT_"), strings.HasPrefix(k, "ISTIO_"),
			strings.HasPrefix(k, "MESHROOT_"), k == "POD_NAME", k == "POD_NAMESPACE", k == "REVISION":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freePorts(n int) ([]string, error) {
	var ports []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, p)
	}
	return ports, nil
}

func safeName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}
