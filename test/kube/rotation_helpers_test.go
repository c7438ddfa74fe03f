// Helpers for rotation_test.go: Istio's CA code as each cluster's workload
// signer (test/tools/istiosigner, a process of its own), workloads that
// keep a current certificate from their cluster's cacerts Secret, and a
// driver of mutual TLS handshakes between the clusters' workloads.

package kube

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// --- istiosigner: Istio's CA code, as istiod runs it ---

var (
	signerOnce sync.Once
	signerPath string
	signerErr  error
)

// istioSignerBin builds test/tools/istiosigner with test/tools/build.sh
// (cached by a hash of its sources and the Istio version) and returns the
// binary's path.
func istioSignerBin(t testing.TB) string {
	t.Helper()
	signerOnce.Do(func() { signerPath, signerErr = buildIstioSigner() })
	if signerErr != nil {
		t.Fatalf("building istiosigner: %v", signerErr)
	}
	return signerPath
}

func buildIstioSigner() (string, error) {
	script, err := filepath.Abs(filepath.Join("..", "tools", "build.sh"))
	if err != nil {
		return "", err
	}
	if env := os.Getenv("MESHROOT_BUILD_SH"); env != "" {
		script = env
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script, "istiosigner")
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr) // a cold build shows its progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s istiosigner: %v\n%s", script, err, stderr.String())
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if p, ok := strings.CutPrefix(line, "istiosigner "); ok {
			return strings.TrimSpace(p), nil
		}
	}
	return "", fmt.Errorf("%s istiosigner printed no binary path: %q", script, stdout.String())
}

// istioSigner is a running `istiosigner -serve`: one IstioCA per cacerts
// folder, reloaded when the folder changes as istiod does with
// AUTO_RELOAD_PLUGIN_CERTS and ISTIO_MULTIROOT_MESH=true.
type istioSigner struct {
	base    string
	logPath string
	client  *http.Client
}

func startIstioSigner(t *testing.T) *istioSigner {
	t.Helper()
	bin := istioSignerBin(t)
	addr := "127.0.0.1:" + freePorts(t, 1)[0]
	logPath := filepath.Join(t.TempDir(), "istiosigner.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-serve", addr)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	s := &istioSigner{base: "http://" + addr, logPath: logPath, client: &http.Client{Timeout: 10 * time.Second}}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("istiosigner log, last lines:\n%s", lastLines(string(b), 40))
		}
	})
	eventually(t, 10*time.Second, "istiosigner answers /healthz", func() error {
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("istiosigner exited:\n%s", b)
		default:
		}
		return httpOK(s.base + "/healthz")
	})
	return s
}

// errRestartNeeded: istiod would refuse the folder's new root-cert.pem
// (neither a subset nor a superset of what it loaded) and must restart.
var errRestartNeeded = errors.New("istiod must restart to take the new roots")

// sign has Istio's CA for dir sign csrPEM for id, and returns the chain
// istiod hands the workload (leaf, then cert-chain.pem) and the root
// bundle (the response's last element: root-cert.pem as istiod loaded it).
func (s *istioSigner) sign(dir, id string, ttl time.Duration, csrPEM []byte) (chain []*x509.Certificate, roots []*x509.Certificate, reloaded bool, err error) {
	q := url.Values{"cacerts": {dir}, "id": {id}, "ttl": {ttl.String()}}
	resp, err := s.client.Post(s.base+"/sign?"+q.Encode(), "application/x-pem-file", bytes.NewReader(csrPEM))
	if err != nil {
		return nil, nil, false, err
	}
	defer resp.Body.Close()
	var body struct {
		CertChain     []string `json:"cert_chain"`
		Reloaded      bool     `json:"reloaded"`
		Error         string   `json:"error"`
		RestartNeeded bool     `json:"restart_needed"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return nil, nil, false, fmt.Errorf("istiosigner: %s: %v", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		if body.RestartNeeded {
			return nil, nil, false, fmt.Errorf("%w: %s", errRestartNeeded, body.Error)
		}
		return nil, nil, false, fmt.Errorf("istiosigner: %s: %s", resp.Status, body.Error)
	}
	if len(body.CertChain) < 2 {
		return nil, nil, false, fmt.Errorf("istiosigner: %d elements in cert_chain", len(body.CertChain))
	}
	for _, p := range body.CertChain[:len(body.CertChain)-1] {
		c, err := parseCerts([]byte(p))
		if err != nil {
			return nil, nil, false, err
		}
		chain = append(chain, c...)
	}
	if roots, err = parseCerts([]byte(body.CertChain[len(body.CertChain)-1])); err != nil {
		return nil, nil, false, fmt.Errorf("root bundle: %w", err)
	}
	return chain, roots, body.Reloaded, nil
}

// restart drops the CA for dir: the next sign loads it from scratch, as a
// new istiod pod would.
func (s *istioSigner) restart(dir string) error {
	resp, err := s.client.Post(s.base+"/restart?"+url.Values{"cacerts": {dir}}.Encode(), "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("istiosigner /restart: %s", resp.Status)
	}
	return nil
}

// istioVerify runs istiod's peer check (pkg/spiffe PeerCertVerifier, with
// roots mapped to the trust domain) on a presented chain.
func (s *istioSigner) istioVerify(roots []*x509.Certificate, chain []*x509.Certificate) error {
	req := struct {
		TrustDomain string   `json:"trust_domain"`
		RootsPEM    string   `json:"roots_pem"`
		ChainDER    [][]byte `json:"chain_der"`
	}{TrustDomain: trustDomain, RootsPEM: string(pemCerts(roots...))}
	for _, c := range chain {
		req.ChainDER = append(req.ChainDER, c.Raw)
	}
	b, _ := json.Marshal(req)
	resp, err := s.client.Post(s.base+"/verify", "application/json", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("istiosigner /verify: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("istiosigner /verify: %s %v %s", resp.Status, err, out.Error)
	}
	if !out.OK {
		return &istioRefusal{out.Error}
	}
	return nil
}

// istioRefusal is Istio's verifier saying no (as opposed to a failed call).
type istioRefusal struct{ msg string }

func (e *istioRefusal) Error() string { return "Istio's PeerCertVerifier: " + e.msg }

// --- a cacerts folder, as the kubelet mounts a Secret ---

// secretDir writes a Secret's keys into a folder the way the kubelet's
// atomic writer does: each file is a symlink through ..data, which is
// swapped to a new timestamped folder in one rename, so a reader never
// sees half of an update.
type secretDir struct {
	dir  string
	rv   string
	gens []string
}

func (d *secretDir) write(data map[string][]byte, rv string) error {
	if rv == d.rv {
		return nil
	}
	gen := filepath.Join(d.dir, fmt.Sprintf("..%d_%s", time.Now().UnixNano(), rv))
	if err := os.Mkdir(gen, 0o700); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(gen, k), v, 0o600); err != nil {
			return err
		}
	}
	tmp := filepath.Join(d.dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "..data")); err != nil {
		return err
	}
	for k := range data {
		link := filepath.Join(d.dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
			return err
		}
	}
	// Keep the previous generation for readers that resolved it just now.
	d.gens = append(d.gens, gen)
	for len(d.gens) > 2 {
		_ = os.RemoveAll(d.gens[0])
		d.gens = d.gens[1:]
	}
	d.rv = rv
	return nil
}

// --- workloads ---

// identity is what a workload holds at one moment: its certificate and
// chain as istiod issued them, and the roots it trusts (root-cert.pem as
// istiod loaded it).
type identity struct {
	cert  tls.Certificate
	chain []*x509.Certificate // leaf first, then cert-chain.pem
	roots []*x509.Certificate
	pool  *x509.CertPool
}

// intermediate is the cluster intermediate that signed the leaf.
func (id *identity) intermediate() *x509.Certificate { return id.chain[1] }

// workload stands for the pods of one cluster (istio-agent + Envoy): every
// refresh it reads the cluster's current cacerts Secret (the folder istiod
// mounts), has Istio's CA sign a fresh key for its SPIFFE ID, and from then
// on presents that chain and trusts exactly the roots that came with it.
type workload struct {
	cluster *kubeenv.Cluster
	id      string
	dir     secretDir
	signer  *istioSigner
	cur     atomic.Pointer[identity]
	ln      net.Listener

	mu       sync.Mutex
	errs     map[string]int // refresh failures by reason
	restarts int            // "istiod" restarts needed to take new roots
	reloads  int            // CA reloads after the Secret changed
}

const (
	workloadRefresh = time.Second
	workloadCertTTL = time.Minute
)

func workloadID(cluster string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/app", trustDomain, cluster)
}

func startWorkload(t *testing.T, c *kubeenv.Cluster, s *istioSigner) *workload {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := filepath.Join(t.TempDir(), "cacerts")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	w := &workload{cluster: c, id: workloadID(c.Name), dir: secretDir{dir: dir}, signer: s, ln: ln, errs: map[string]int{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(workloadRefresh)
		defer tick.Stop()
		for {
			if err := w.refresh(ctx); err != nil && ctx.Err() == nil {
				w.mu.Lock()
				w.errs[reason(err)]++
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eventually(t, 20*time.Second, "workload of "+c.Name+" has a certificate", func() error {
		if w.cur.Load() == nil {
			return fmt.Errorf("refresh errors: %v", w.refreshErrors())
		}
		return nil
	})
	return w
}

// refresh gets a new certificate from the cluster's current cacerts.
func (w *workload) refresh(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sec, err := w.cluster.Client.CoreV1().Secrets(meshNS).Get(sctx, cacertsName, metav1GetOptions())
	if err != nil {
		return fmt.Errorf("get cacerts: %w", err)
	}
	if err := w.dir.write(sec.Data, sec.ResourceVersion); err != nil {
		return fmt.Errorf("write cacerts folder: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	u, _ := url.Parse(w.id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return err
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	chain, roots, reloaded, err := w.signer.sign(w.dir.dir, w.id, workloadCertTTL, csr)
	if errors.Is(err, errRestartNeeded) {
		// What `--restart-istiod auto` does for an istiod that cannot take
		// the new roots at run time: a new istiod loads the folder afresh.
		w.mu.Lock()
		w.restarts++
		w.mu.Unlock()
		if err := w.signer.restart(w.dir.dir); err != nil {
			return err
		}
		chain, roots, reloaded, err = w.signer.sign(w.dir.dir, w.id, workloadCertTTL, csr)
	}
	if err != nil {
		return err
	}
	if reloaded {
		w.mu.Lock()
		w.reloads++
		w.mu.Unlock()
	}
	id := &identity{chain: chain, roots: roots, pool: x509.NewCertPool()}
	for _, r := range roots {
		id.pool.AddCert(r)
	}
	for _, c := range chain {
		id.cert.Certificate = append(id.cert.Certificate, c.Raw)
	}
	id.cert.PrivateKey, id.cert.Leaf = key, chain[0]
	w.cur.Store(id)
	return nil
}

func (w *workload) refreshErrors() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.errs {
		out[k] = v
	}
	return out
}

func (w *workload) reloadCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reloads
}

func metav1GetOptions() metav1.GetOptions { return metav1.GetOptions{} }

func (w *workload) restartCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.restarts
}

// verifyPeer is the peer check istiod configures in Envoy, as
// pkg/spiffe PeerCertVerifier.VerifyPeerCert does it with Go's x509: the
// first certificate is the peer's, the rest are intermediates, exactly one
// URI SAN, a chain to the trusted roots (default key usage, as Istio) —
// plus what Istio leaves to other layers: a certificate is required, and
// it must name the expected SPIFFE ID.
func verifyPeer(raw [][]byte, roots *x509.CertPool, want string) error {
	if len(raw) == 0 {
		return errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	var leaf *x509.Certificate
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		if i == 0 {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	if len(leaf.URIs) != 1 {
		return fmt.Errorf("peer certificate does not contain 1 URI type SAN, detected %d", len(leaf.URIs))
	}
	if got := leaf.URIs[0].String(); got != want {
		return fmt.Errorf("peer is %s, want %s", got, want)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}

// handshake runs one TLS 1.3 mutual handshake over TCP on 127.0.0.1
// between a client holding cid and a server holding sid (served on ln),
// then a read/write round trip: in TLS 1.3 the client's handshake ends
// before the server has judged its certificate, so only the server's
// answer proves it accepted the client. It returns each side's error.
func handshake(ln net.Listener, cid *identity, clientName string, sid *identity, serverName string) (clientErr, serverErr error) {
	srvDone := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(conn, &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{sid.cert},
			ClientAuth:   tls.RequireAnyClientCert,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				return verifyPeer(raw, sid.pool, clientName)
			},
		})
		if err := tc.Handshake(); err != nil {
			srvDone <- err
			return
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil {
			srvDone <- err
			return
		}
		_, err = tc.Write([]byte("pong"))
		srvDone <- err
	}()
	clientErr = func() error {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(conn, &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cid.cert},
			// SPIFFE certificates name no host: the peer check is ours.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				return verifyPeer(raw, cid.pool, serverName)
			},
		})
		if err := tc.Handshake(); err != nil {
			return err
		}
		if _, err := tc.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil {
			return err
		}
		if string(buf) != "pong" {
			return fmt.Errorf("read %q, want pong", buf)
		}
		return nil
	}()
	select {
	case serverErr = <-srvDone:
	case <-time.After(6 * time.Second):
		serverErr = errors.New("server side did not finish")
	}
	return clientErr, serverErr
}

// handshakeOnce is handshake on a listener of its own.
func handshakeOnce(cid *identity, clientName string, sid *identity, serverName string) (clientErr, serverErr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer ln.Close()
	return handshake(ln, cid, clientName, sid, serverName)
}

// --- the traffic driver ---

// traffic drives handshakes between two workloads in both directions and
// counts them per phase.
type traffic struct {
	mu      sync.Mutex
	phase   string
	order   []string
	ok      map[string]int
	fail    map[string]int
	reasons map[string]map[string]int // phase -> reason -> count
	first   map[string]string         // phase -> first failure, in full
}

const handshakeInterval = 100 * time.Millisecond

// startTraffic starts a driver loop per direction (a -> b and b -> a), each
// making a handshake and round trip about every 100 ms, until stop is
// called (or the test ends).
func startTraffic(t *testing.T, a, b *workload) (tr *traffic, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	tr = &traffic{ok: map[string]int{}, fail: map[string]int{}, reasons: map[string]map[string]int{}, first: map[string]string{}}
	tr.setPhase("before")
	var wg sync.WaitGroup
	for _, pair := range [][2]*workload{{a, b}, {b, a}} {
		client, server := pair[0], pair[1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				phase := tr.current()
				cid, sid := client.cur.Load(), server.cur.Load()
				cerr, serr := handshake(server.ln, cid, client.id, sid, server.id)
				if ctx.Err() != nil {
					return
				}
				dir := client.cluster.Name + "->" + server.cluster.Name
				tr.record(phase, dir, cid, sid, cerr, serr)
				select {
				case <-ctx.Done():
				case <-time.After(handshakeInterval):
				}
			}
		}()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return tr, stop
}

func (tr *traffic) setPhase(p string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.phase = p
	tr.order = append(tr.order, p)
}

func (tr *traffic) current() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.phase
}

func (tr *traffic) record(phase, dir string, cid, sid *identity, cerr, serr error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if cerr == nil && serr == nil {
		tr.ok[phase]++
		return
	}
	tr.fail[phase]++
	r := fmt.Sprintf("%s: client: %s; server: %s", dir, reason(cerr), reason(serr))
	if tr.reasons[phase] == nil {
		tr.reasons[phase] = map[string]int{}
	}
	tr.reasons[phase][r]++
	if _, ok := tr.first[phase]; !ok {
		tr.first[phase] = fmt.Sprintf("%s at %s: client: %v; server: %v; client chain %s; server chain %s; client trusts %s; server trusts %s",
			dir, time.Now().Format("15:04:05.000"), cerr, serr, describeChain(cid.chain), describeChain(sid.chain), describeCerts(cid.roots), describeCerts(sid.roots))
	}
}

// counts returns successes and failures of a phase.
func (tr *traffic) counts(phase string) (ok, fail int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok[phase], tr.fail[phase]
}

// summary is a line per phase.
func (tr *traffic) summary() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var b strings.Builder
	for _, p := range tr.order {
		fmt.Fprintf(&b, "  %-10s %4d ok, %d failed\n", p, tr.ok[p], tr.fail[p])
		var rs []string
		for r, n := range tr.reasons[p] {
			rs = append(rs, fmt.Sprintf("%dx %s", n, r))
		}
		sort.Strings(rs)
		for _, r := range rs {
			fmt.Fprintf(&b, "      %s\n", r)
		}
		if f, ok := tr.first[p]; ok {
			fmt.Fprintf(&b, "      first: %s\n", f)
		}
	}
	return b.String()
}

func reason(err error) string {
	if err == nil {
		return "ok"
	}
	s := err.Error()
	if i := strings.Index(s, "(possibly because"); i > 0 { // x509's long hint
		s = strings.TrimSpace(s[:i])
	}
	return s
}

func describeCerts(cs []*x509.Certificate) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%q(%x)", c.Subject.CommonName, c.SubjectKeyId[:min(4, len(c.SubjectKeyId))]))
	}
	return "[" + strings.Join(out, " ") + "]"
}

func describeChain(cs []*x509.Certificate) string {
	if len(cs) == 0 {
		return "[]"
	}
	return describeCerts(cs[1:])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
