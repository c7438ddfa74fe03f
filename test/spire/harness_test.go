package spire_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	meshrootTD = "meshroot.test"
	spireTD    = "spire.test"
	// meshrootEndpointID is the SPIFFE ID of meshroot's bundle endpoint SVID
	// (https_spiffe profile).
	meshrootEndpointID = "spiffe://meshroot.test/meshroot/bundle-endpoint"
	// spireEndpointID is the SPIFFE ID SPIRE v1.13.3 presents on its bundle
	// endpoint in the https_spiffe profile: the server's own SVID.
	spireEndpointID = "spiffe://spire.test/spire/server"
	// refreshHint is the refresh hint meshroot serves (config refreshHint).
	refreshHint = 2 * time.Second
)

var (
	meshrootBin string // built by TestMain
	relayBin    string // meshroot-bundle, built by TestMain
	spireBin    string // spire-server v1.13.3 from test/tools/build.sh
)

func TestMain(m *testing.M) { os.Exit(setup(m)) }

func setup(m *testing.M) int {
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "spire tests:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "meshroot-spire-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "spire tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// linked once per content for every harness of `make test`
	meshrootBin, relayBin = filepath.Join(dir, "meshroot"), filepath.Join(dir, "meshroot-bundle")
	build := exec.Command(filepath.Join(repo, "test", "tools", "meshroot-bins.sh"), dir, "meshroot", "meshroot-bundle")
	build.Dir = repo
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "spire tests: test/tools/meshroot-bins.sh meshroot meshroot-bundle:", err)
		return 1
	}

	if spireBin = os.Getenv("SPIRE_SERVER_BIN"); spireBin == "" {
		var out bytes.Buffer
		tools := exec.Command(filepath.Join(repo, "test", "tools", "build.sh"), "spire")
		tools.Dir = repo
		tools.Stdout, tools.Stderr = &out, os.Stderr
		if err := tools.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "spire tests: test/tools/build.sh spire:", err)
			return 1
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		spireBin = filepath.Join(strings.TrimSpace(lines[len(lines)-1]), "spire-v1.13.3", "spire-server")
	}
	if _, err := os.Stat(spireBin); err != nil {
		fmt.Fprintln(os.Stderr, "spire tests: spire-server:", err)
		return 1
	}
	return m.Run()
}

// ---------------------------------------------------------------------------
// Processes

// proc is a long-running child process whose output is kept for the log.
type proc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	lines  chan string // every output line, for whoever waits on one (dropped when full)
	exited chan struct{}
	err    error
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startProc starts bin with args and env (added to a copy of the
// environment without MESHROOT_* variables). The process is stopped
// (SIGTERM, then SIGKILL after 5 s) in t.Cleanup, and its output is printed
// when the test failed.
func startProc(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, lines: make(chan string, 256), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(cleanEnv(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- line:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-readDone
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("---- %s output ----\n%s---- end of %s output ----", p.name, p.logs(), p.name)
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") && !strings.HasPrefix(kv, "SSL_CERT_") {
			env = append(env, kv)
		}
	}
	return env
}

// run runs a short command and returns its stdout, or its error with
// stderr.
func run(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// eventually calls f every 200 ms until it returns nil or timeout passes,
// then fails the test with f's last error.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago (for
// SPIRE, whose ports must be known before it starts), never the same one
// twice in this process.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		taken := portsGiven[port]
		portsGiven[port] = true
		portsMu.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// shortDir is a folder with a short path, for unix sockets.
func shortDir(t *testing.T, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// ---------------------------------------------------------------------------
// A Web PKI test CA

type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
	pool    *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{CommonName: "meshroot SPIRE test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, pemFile: filepath.Join(t.TempDir(), "test-ca.pem"), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	writeFile(t, ca.pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// serverCert issues a server certificate for IP 127.0.0.1 and returns the
// certificate and key files.
func (ca *testCA) serverCert(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
	return certFile, keyFile
}

func randSerial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// meshroot

type meshrootOpts struct {
	profile           string // https_web or https_spiffe
	certFile, keyFile string // https_web
	caFile            string // federation.caFile: roots for https_web peers
}

type meshrootServer struct {
	*proc
	t                      *testing.T
	dataDir, socket        string
	issuer, http, endpoint string // addresses from the start line
	endpointURL            string
}

// startMeshroot runs `meshroot serve` on free loopback ports with its bundle
// endpoint in opts.profile, creates the root of meshroot.test, and waits
// until the bundle endpoint serves the bundle.
func startMeshroot(t *testing.T, opts meshrootOpts) *meshrootServer {
	t.Helper()
	dir := t.TempDir()
	m := &meshrootServer{t: t, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(shortDir(t, "mr"), "admin.sock")}
	cfg := "refreshHint: 2s\nfederation:\n  minRefresh: 1s\n"
	if opts.caFile != "" {
		cfg += "  caFile: " + strconv.Quote(opts.caFile) + "\n"
	}
	cfgFile := filepath.Join(dir, "meshroot.yaml")
	writeFile(t, cfgFile, []byte(cfg))
	args := []string{"serve", "--data-dir", m.dataDir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--socket", m.socket, "--insecure-plaintext-key", "--trust-domain", meshrootTD,
		"--bundle-endpoint-listen", "127.0.0.1:0", "--bundle-endpoint-profile", opts.profile, "--config", cfgFile}
	if opts.profile == "https_web" {
		args = append(args, "--bundle-endpoint-cert", opts.certFile, "--bundle-endpoint-key", opts.keyFile)
	}
	m.proc = startProc(t, "meshroot serve ("+opts.profile+")", nil, meshrootBin, args...)
	timeout := time.After(20 * time.Second)
	for m.endpoint == "" {
		select {
		case line := <-m.lines:
			var rec struct {
				Msg            string `json:"msg"`
				Issuer         string `json:"issuer"`
				HTTP           string `json:"http"`
				BundleEndpoint string `json:"bundle_endpoint"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "meshroot server starting" {
				m.issuer, m.http, m.endpoint = rec.Issuer, rec.HTTP, rec.BundleEndpoint
			}
		case <-m.exited:
			t.Fatalf("meshroot serve exited: %v", m.err)
		case <-timeout:
			t.Fatal("meshroot serve printed no start line within 20 s")
		}
	}
	if _, _, err := net.SplitHostPort(m.endpoint); err != nil {
		t.Fatalf("meshroot's start line names bundle endpoint %q", m.endpoint)
	}
	m.endpointURL = "https://" + m.endpoint
	m.cli("root", "init", "--trust-domain", meshrootTD)
	waitServes(t, m.endpointURL+"/", "meshroot's bundle endpoint serves the bundle")
	return m
}

// waitServes waits until url answers 200. Readiness only: the endpoint's
// authentication is checked by the tests.
func waitServes(t *testing.T, url, what string) {
	t.Helper()
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer insecure.CloseIdleConnections()
	eventually(t, 15*time.Second, what, func() error {
		resp, err := insecure.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %s", resp.Status)
		}
		return nil
	})
}

// relayProc is a running meshroot-bundle.
type relayProc struct {
	*proc
	url string
}

// startRelay runs meshroot-bundle with args (which must listen on port 0)
// and waits for its start line and for it to serve a bundle.
func startRelay(t *testing.T, args ...string) *relayProc {
	t.Helper()
	r := &relayProc{proc: startProc(t, "meshroot-bundle", nil, relayBin, args...)}
	timeout := time.After(20 * time.Second)
	for r.url == "" {
		select {
		case line := <-r.lines:
			var rec struct {
				Msg            string `json:"msg"`
				BundleEndpoint string `json:"bundle_endpoint"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "meshroot-bundle starting" {
				r.url = "https://" + rec.BundleEndpoint + "/"
			}
		case <-r.exited:
			t.Fatalf("meshroot-bundle exited: %v\n%s", r.err, r.logs())
		case <-timeout:
			t.Fatal("meshroot-bundle printed no start line within 20 s")
		}
	}
	waitServes(t, r.url, "meshroot-bundle serves a bundle")
	return r
}

// cli runs `meshroot --socket S args...` and fails the test on error.
func (m *meshrootServer) cli(args ...string) string {
	m.t.Helper()
	out, err := m.try(args...)
	if err != nil {
		m.t.Fatal(err)
	}
	return out
}

func (m *meshrootServer) try(args ...string) (string, error) {
	return run(context.Background(), meshrootBin, append([]string{"--socket", m.socket}, args...)...)
}

// roots returns meshroot's trust bundle (`bundle show -o pem`).
func (m *meshrootServer) roots() []*x509.Certificate {
	m.t.Helper()
	return parsePEMCerts(m.t, []byte(m.cli("bundle", "show", "-o", "pem")))
}

// localBundle returns `bundle show -o spiffe`: the document and its sequence.
func (m *meshrootServer) localBundle() ([]byte, uint64) {
	m.t.Helper()
	doc := []byte(strings.TrimSpace(m.cli("bundle", "show", "-o", "spiffe")))
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(meshrootTD), doc)
	if err != nil {
		m.t.Fatalf("meshroot bundle show -o spiffe: %v\n%s", err, doc)
	}
	seq, ok := b.SequenceNumber()
	if !ok {
		m.t.Fatalf("meshroot bundle show -o spiffe has no spiffe_sequence:\n%s", doc)
	}
	return doc, seq
}

// metric checks that /metrics shows series (name{labels} as exposed) with
// value want.
func (m *meshrootServer) metric(series string, want float64) error {
	resp, err := http.Get("http://" + m.http + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			got, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || got != want {
				return fmt.Errorf("%s = %q, want %v", series, v, want)
			}
			return nil
		}
	}
	return fmt.Errorf("/metrics has no %s", series)
}

// peerStatus is one row of `meshroot federation status -o json`.
type peerStatus struct {
	TrustDomain string          `json:"trust_domain"`
	URL         string          `json:"url"`
	Profile     string          `json:"profile"`
	HasBundle   bool            `json:"has_bundle"`
	Sequence    uint64          `json:"sequence"`
	LastSuccess time.Time       `json:"last_success"`
	LastError   string          `json:"last_error"`
	Bundle      json.RawMessage `json:"bundle"` // not shown by meshroot yet; used when it is
}

func (m *meshrootServer) peer(td string) (peerStatus, error) {
	out, err := m.try("federation", "status", "-o", "json")
	if err != nil {
		return peerStatus{}, err
	}
	var peers []peerStatus
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		return peerStatus{}, fmt.Errorf("federation status -o json: %v\n%s", err, out)
	}
	for _, p := range peers {
		if p.TrustDomain == td {
			return p, nil
		}
	}
	return peerStatus{}, fmt.Errorf("federation status lists no peer %s: %s", td, out)
}

// heldBundle returns the bundle meshroot holds for the peer td, as
// `federation status -o json` shows it.
func (m *meshrootServer) heldBundle(td string) *spiffebundle.Bundle {
	m.t.Helper()
	p, err := m.peer(td)
	if err != nil {
		m.t.Fatal(err)
	}
	if len(p.Bundle) == 0 || string(p.Bundle) == "null" {
		m.t.Fatalf("federation status shows no bundle held for %s", td)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(td), p.Bundle)
	if err != nil {
		m.t.Fatalf("the bundle meshroot holds for %s: %v\n%s", td, err, p.Bundle)
	}
	return b
}

// ---------------------------------------------------------------------------
// SPIRE

type spireFederation struct {
	td, url string
	// profile is https_web, or https_spiffe with endpointID.
	profile, endpointID string
}

type spireOpts struct {
	// endpointProfile of SPIRE's own bundle endpoint: https_spiffe (its
	// server SVID) or https_web (certFile, keyFile).
	endpointProfile   string
	certFile, keyFile string
	federatesWith     []spireFederation
	// sslCertFile, when set, is SPIRE's only Web PKI trust (SSL_CERT_FILE).
	sslCertFile string
}

type spireServer struct {
	*proc
	t           *testing.T
	socket      string
	bundlePort  int
	endpointURL string
}

// startSPIRE runs spire-server with opts and waits until its API answers
// and its bundle endpoint serves. A start that loses one of its ports to
// another process is retried on new ports.
func startSPIRE(t *testing.T, opts spireOpts) *spireServer {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s, err := trySPIRE(t, opts)
		if err == nil {
			return s
		}
		if attempt < 3 && strings.Contains(s.logs(), "address already in use") {
			t.Logf("spire-server lost a port, retrying: %v", err)
			continue
		}
		t.Fatal(err)
	}
}

func trySPIRE(t *testing.T, opts spireOpts) (*spireServer, error) {
	t.Helper()
	dir := t.TempDir()
	s := &spireServer{t: t, socket: filepath.Join(shortDir(t, "sp"), "api.sock"), bundlePort: freePort(t)}
	s.endpointURL = fmt.Sprintf("https://127.0.0.1:%d", s.bundlePort)
	profile := `profile "https_spiffe" {}`
	if opts.endpointProfile == "https_web" {
		// file_sync_interval is required: without it SPIRE does not start
		// (time: invalid duration "").
		profile = fmt.Sprintf(`profile "https_web" {
        serving_cert_file {
          cert_file_path = %q
          key_file_path = %q
          file_sync_interval = "1h"
        }
      }`, opts.certFile, opts.keyFile)
	}
	var feds strings.Builder
	for _, f := range opts.federatesWith {
		p := `bundle_endpoint_profile "https_web" {}`
		if f.profile == "https_spiffe" {
			p = fmt.Sprintf(`bundle_endpoint_profile "https_spiffe" { endpoint_spiffe_id = %q }`, f.endpointID)
		}
		fmt.Fprintf(&feds, "    federates_with %q {\n      bundle_endpoint_url = %q\n      %s\n    }\n", f.td, f.url, p)
	}
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = %d
      refresh_hint = "1m"
      %s
    }
%s  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
`, freePort(t), s.socket, spireTD, filepath.Join(dir, "data"), s.bundlePort, profile, feds.String(), filepath.Join(dir, "data", "datastore.sqlite3"))
	confFile := filepath.Join(dir, "server.conf")
	writeFile(t, confFile, []byte(conf))
	var env []string
	if opts.sslCertFile != "" {
		env = append(env, "SSL_CERT_FILE="+opts.sslCertFile)
	}
	s.proc = startProc(t, "spire-server", env, spireBin, "run", "-config", confFile)
	// Readiness only: the endpoint's authentication is checked by the tests.
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer insecure.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if !s.running() {
			return s, fmt.Errorf("spire-server exited: %v\nconfig:\n%s", s.err, conf)
		}
		_, err := s.try("healthcheck")
		if err == nil {
			var resp *http.Response
			if resp, err = insecure.Get(s.endpointURL + "/"); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("bundle endpoint: HTTP %s", resp.Status)
				}
			}
		}
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("spire-server not ready within 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// try runs `spire-server SUB [SUB...] -socketPath S flags...`: sub is the
// space-separated subcommand ("bundle list").
func (s *spireServer) try(sub string, flags ...string) (string, error) {
	args := append(strings.Fields(sub), "-socketPath", s.socket)
	return run(context.Background(), spireBin, append(args, flags...)...)
}

func (s *spireServer) cli(sub string, flags ...string) string {
	s.t.Helper()
	out, err := s.try(sub, flags...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// federatedBundle returns the bundle SPIRE holds for td
// (`bundle list -id spiffe://td -format spiffe`).
func (s *spireServer) federatedBundle(td string) (*spiffebundle.Bundle, []byte, error) {
	out, err := s.try("bundle list", "-id", "spiffe://"+td, "-format", "spiffe")
	if err != nil {
		return nil, nil, err
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(td), []byte(out))
	if err != nil {
		return nil, nil, fmt.Errorf("spire-server bundle list -format spiffe: %v\n%s", err, out)
	}
	return b, []byte(out), nil
}

// federatedSequence is the sequence_number SPIRE stored for td (`bundle
// list -output json`).
func (s *spireServer) federatedSequence(td string) (uint64, error) {
	out, err := s.try("bundle list", "-output", "json")
	if err != nil {
		return 0, err
	}
	var resp struct {
		Bundles []struct {
			TrustDomain    string `json:"trust_domain"`
			SequenceNumber string `json:"sequence_number"`
		} `json:"bundles"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return 0, fmt.Errorf("bundle list -output json: %v", err)
	}
	for _, b := range resp.Bundles {
		if b.TrustDomain == td {
			return strconv.ParseUint(b.SequenceNumber, 10, 64)
		}
	}
	return 0, fmt.Errorf("SPIRE holds no bundle for %s", td)
}

// ownBundle returns SPIRE's own bundle document (`bundle show -format
// spiffe`) and parsed form.
func (s *spireServer) ownBundle() ([]byte, *spiffebundle.Bundle) {
	s.t.Helper()
	out := s.cli("bundle show", "-format", "spiffe")
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(spireTD), []byte(out))
	if err != nil {
		s.t.Fatalf("spire-server bundle show -format spiffe: %v\n%s", err, out)
	}
	return []byte(out), b
}

// refresh forces SPIRE to fetch td's bundle now; the error is SPIRE's.
func (s *spireServer) refresh(td string) error {
	_, err := s.try("federation refresh", "-id", "spiffe://"+td)
	return err
}

// ---------------------------------------------------------------------------
// Certificates

func parsePEMCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("no PEM certificate")
	}
	return certs
}

// sameCerts reports, as an error, how two sets of certificates differ (by
// DER, in any order).
func sameCerts(got, want []*x509.Certificate) error {
	set := func(cs []*x509.Certificate) map[string]string {
		m := map[string]string{}
		for _, c := range cs {
			m[string(c.Raw)] = c.Subject.String()
		}
		return m
	}
	g, w := set(got), set(want)
	var missing, extra []string
	for k, name := range w {
		if _, ok := g[k]; !ok {
			missing = append(missing, name)
		}
	}
	for k, name := range g {
		if _, ok := w[k]; !ok {
			extra = append(extra, name)
		}
	}
	if len(missing) > 0 || len(extra) > 0 || len(got) != len(want) {
		return fmt.Errorf("certificates differ: %d held, %d expected; missing %q, unexpected %q", len(got), len(want), missing, extra)
	}
	return nil
}

var errNotYet = errors.New("not yet")
