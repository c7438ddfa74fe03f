// Package e2e runs the meshroot binary as a user would and checks that what
// it writes is usable by Istio-like consumers: Go's TLS stack doing mutual
// TLS between two clusters, openssl verify, and a Kubernetes Secret.
package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	_ "modernc.org/sqlite" // "sqlite" database/sql driver, to tamper with the audit log
)

const trustDomain = "example.org"

// meshrootBin is the binary TestMain builds, with meshroot-plugin next to it.
var meshrootBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meshroot-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	meshrootBin = filepath.Join(dir, "meshroot")
	// meshroot-plugin goes next to meshroot, where meshroot looks for it
	// first: the step-ca upstream and cloud KMS keys run in it.
	if err := buildCommands(dir, "meshroot", "meshroot-plugin"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// buildCommands puts the named commands of meshroot into dir, linked once per
// content for every harness of `make test` (test/tools/meshroot-bins.sh).
func buildCommands(dir string, names ...string) error {
	build := exec.Command(filepath.Join("..", "tools", "meshroot-bins.sh"), append([]string{dir}, names...)...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("test/tools/meshroot-bins.sh %s: %v", strings.Join(names, " "), err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Running the binary

// meshroot runs the binary against one data dir with an environment free of
// the parent's MESHROOT_* variables.
type meshroot struct {
	t       *testing.T
	dataDir string
	env     []string // extra KEY=VALUE entries
	dir     string   // working directory ("" = inherit)
	socket  string   // when set, talk to the server on this socket instead of the data dir
}

// result is one finished run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("meshroot %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// newMeshroot returns a runner with a fresh, empty data dir.
func newMeshroot(t *testing.T) *meshroot {
	t.Helper()
	return &meshroot{t: t, dataDir: filepath.Join(t.TempDir(), "data")}
}

// with returns a copy of m that adds KEY=VALUE entries to the environment.
func (m *meshroot) with(kv ...string) *meshroot {
	c := *m
	c.env = append(slices.Clone(m.env), kv...)
	return &c
}

func (m *meshroot) run(args ...string) result {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append(slices.Clone(args), "--data-dir="+m.dataDir)
	if m.socket != "" {
		full = append(slices.Clone(args), "--socket="+m.socket)
	}
	cmd := exec.CommandContext(ctx, meshrootBin, full...)
	cmd.Dir = m.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, m.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		m.t.Fatalf("meshroot %s: %v\nstderr:\n%s", strings.Join(args, " "), err, r.stderr)
	}
	return r
}

// ok runs args and fails the test unless the exit code is 0.
func (m *meshroot) ok(args ...string) result {
	m.t.Helper()
	r := m.run(args...)
	if r.code != 0 {
		m.t.Fatalf("want exit 0, got %s", r)
	}
	return r
}

// refused runs args and fails the test unless the exit code is want and
// stderr contains every one of msgs (case-insensitive).
func (m *meshroot) refused(want int, msgs []string, args ...string) result {
	m.t.Helper()
	r := m.run(args...)
	if r.code != want {
		m.t.Fatalf("want exit %d, got %s", want, r)
	}
	for _, s := range msgs {
		if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(s)) {
			m.t.Errorf("meshroot %s: stderr does not mention %q:\n%s", strings.Join(args, " "), s, r.stderr)
		}
	}
	return r
}

// initRoot runs `root init` for trustDomain with a plaintext dev key.
func (m *meshroot) initRoot() {
	m.t.Helper()
	m.ok("root", "init", "--trust-domain", trustDomain, "--insecure-plaintext-key")
}

// issue registers cluster (when add) and issues its intermediate into a new
// folder, which it returns.
func (m *meshroot) issue(cluster string, add bool, extra ...string) string {
	m.t.Helper()
	if add {
		m.ok("cluster", "add", cluster)
	}
	out := filepath.Join(m.t.TempDir(), cluster)
	args := append([]string{"intermediate", "issue", "--cluster", cluster, "--out", out, "--insecure-plaintext-key"}, extra...)
	m.ok(args...)
	return out
}

// ---------------------------------------------------------------------------
// Certificates

// cacerts is one cluster's Istio cacerts folder, parsed.
type cacerts struct {
	dir   string
	cert  *x509.Certificate   // ca-cert.pem
	key   crypto.Signer       // ca-key.pem
	chain []*x509.Certificate // cert-chain.pem
	roots []*x509.Certificate // root-cert.pem
}

func loadCACerts(t *testing.T, dir string) *cacerts {
	t.Helper()
	c := &cacerts{dir: dir}
	certs := readCerts(t, filepath.Join(dir, "ca-cert.pem"))
	if len(certs) != 1 {
		t.Fatalf("%s/ca-cert.pem holds %d certificates, want 1", dir, len(certs))
	}
	c.cert = certs[0]
	c.key = readKey(t, filepath.Join(dir, "ca-key.pem"))
	c.chain = readCerts(t, filepath.Join(dir, "cert-chain.pem"))
	c.roots = readCerts(t, filepath.Join(dir, "root-cert.pem"))
	if !c.cert.Equal(c.chain[0]) {
		t.Fatalf("%s: cert-chain.pem does not start with ca-cert.pem", dir)
	}
	return c
}

func (c *cacerts) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.roots {
		p.AddCert(r)
	}
	return p
}

func parseCerts(t *testing.T, name string, data []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("%s: PEM block %q, want CERTIFICATE", name, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(data)) != 0 {
		t.Fatalf("%s: trailing data after the certificates", name)
	}
	if len(certs) == 0 {
		t.Fatalf("%s: no certificate", name)
	}
	return certs
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseCerts(t, path, data)
}

func parseKey(t *testing.T, name string, data []byte) crypto.Signer {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("%s: want one PKCS#8 PRIVATE KEY PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k.(crypto.Signer)
}

func readKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseKey(t, path, data)
}

func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func spiffeID(cluster string) string {
	return "spiffe://" + trustDomain + "/ns/" + cluster + "/sa/app"
}

// workload is a leaf signed the way istiod signs workload certificates.
type workload struct {
	leaf *x509.Certificate
	cert tls.Certificate // leaf, then cert-chain.pem, as istiod hands out
}

// signWorkload signs a short-lived workload leaf for id with the cluster
// intermediate in c, like istiod: ECDSA P-256, URI SAN only, serverAuth and
// clientAuth, digitalSignature|keyEncipherment.
func signWorkload(t *testing.T, c *cacerts, id string) workload {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key := newP256(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatalf("sign workload %s under %s: %v", id, c.dir, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{der}
	for _, ca := range c.chain {
		chain = append(chain, ca.Raw)
	}
	return workload{leaf: leaf, cert: tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// Mutual TLS

// peerID returns the single URI SAN of a certificate.
func peerID(c *x509.Certificate) (string, error) {
	if len(c.URIs) != 1 {
		return "", fmt.Errorf("peer certificate has %d URI SANs, want exactly one SPIFFE ID", len(c.URIs))
	}
	return c.URIs[0].String(), nil
}

// checkPeerID is a VerifyConnection hook that accepts only the SPIFFE ID want
// and records it in *seen.
func checkPeerID(want string, seen *string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		id, err := peerID(cs.PeerCertificates[0])
		if err != nil {
			return err
		}
		if id != want {
			return fmt.Errorf("peer is %s, want %s", id, want)
		}
		*seen = id
		return nil
	}
}

// verifySPIFFEServer verifies the server's chain against roots only (the
// leaf carries no DNS name, so hostname verification is replaced by the
// SPIFFE ID check, as SPIFFE and Istio clients do).
func verifySPIFFEServer(roots *x509.CertPool, want string, seen *string) func(tls.ConnectionState) error {
	checkID := checkPeerID(want, seen)
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return checkID(cs)
	}
}

// mtlsSide is one end of a connection.
type mtlsSide struct {
	cert  tls.Certificate
	trust *x509.CertPool // the only roots this side accepts
	want  string         // the SPIFFE ID this side accepts from its peer
}

// mtlsResult is what each side saw.
type mtlsResult struct {
	serverErr, clientErr   error
	serverPeer, clientPeer string
	serverGot, clientGot   string
}

// mutualTLS runs a TLS 1.3 handshake between server and client over
// 127.0.0.1, then a ping/pong round trip (in TLS 1.3 the client's handshake
// completes before the server has judged the client certificate).
func mutualTLS(t *testing.T, server, client mtlsSide) mtlsResult {
	t.Helper()
	var res mtlsResult
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverCfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{server.cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        server.trust,
		VerifyConnection: checkPeerID(client.want, &res.serverPeer),
	}
	clientCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Always present the certificate, as Envoy does: Go's default
		// would send none when the server's CA list does not name the
		// client's issuer, and the server's verification would go untested.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &client.cert, nil
		},
		// Verification is done in VerifyConnection against client.trust
		// only; nothing from the system pool is used.
		InsecureSkipVerify: true,
		RootCAs:            client.trust,
		VerifyConnection:   verifySPIFFEServer(client.trust, server.want, &res.clientPeer),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		conn := tls.Server(raw, serverCfg)
		if err := conn.Handshake(); err != nil {
			res.serverErr = err
			return
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil {
			res.serverErr = err
			return
		}
		res.serverGot = string(buf)
		if _, err := conn.Write([]byte("pong")); err != nil {
			res.serverErr = err
			return
		}
		_ = conn.Close()
	}()
	func() {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			res.clientErr = err
			return
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		conn := tls.Client(raw, clientCfg)
		if err := conn.Handshake(); err != nil {
			res.clientErr = err
			return
		}
		if _, err := conn.Write([]byte("ping")); err != nil {
			res.clientErr = err
			return
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil {
			res.clientErr = err
			return
		}
		res.clientGot = string(buf)
	}()
	<-done
	return res
}

// assertMutualTLSOK fails unless the round trip worked and each side saw
// the expected peer.
func assertMutualTLSOK(t *testing.T, server, client mtlsSide) {
	t.Helper()
	res := mutualTLS(t, server, client)
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("mutual TLS failed: server: %v; client: %v", res.serverErr, res.clientErr)
	}
	if res.serverGot != "ping" || res.clientGot != "pong" {
		t.Errorf("round trip: server read %q, client read %q", res.serverGot, res.clientGot)
	}
	if res.serverPeer != client.want {
		t.Errorf("server saw peer %q, want %q", res.serverPeer, client.want)
	}
	if res.clientPeer != server.want {
		t.Errorf("client saw peer %q, want %q", res.clientPeer, server.want)
	}
}

// isCertVerificationError reports whether err is a failed certificate
// chain verification for an unknown authority.
func isCertVerificationError(err error) bool {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	return errors.As(err, &cve) && errors.As(err, &uae)
}

// ---------------------------------------------------------------------------
// Tests

func TestTwoClustersMutualTLS(t *testing.T) {
	m := newMeshroot(t)
	m.initRoot()
	east := loadCACerts(t, m.issue("east", true))
	west := loadCACerts(t, m.issue("west", true))

	if !east.roots[0].Equal(west.roots[0]) || len(east.roots) != 1 || len(west.roots) != 1 {
		t.Fatalf("east and west should trust the same single root")
	}
	if east.cert.Subject.CommonName != "east" || west.cert.Subject.CommonName != "west" {
		t.Errorf("intermediate subjects: %q, %q", east.cert.Subject, west.cert.Subject)
	}
	for _, c := range []*cacerts{east, west} {
		if !c.cert.IsCA || c.cert.MaxPathLen != 0 || !c.cert.MaxPathLenZero {
			t.Errorf("%s: intermediate is not a pathlen-0 CA", c.dir)
		}
	}

	eastLeaf := signWorkload(t, east, spiffeID("east"))
	westLeaf := signWorkload(t, west, spiffeID("west"))
	assertMutualTLSOK(t,
		mtlsSide{cert: eastLeaf.cert, trust: west.rootPool(), want: spiffeID("east")},
		mtlsSide{cert: westLeaf.cert, trust: east.rootPool(), want: spiffeID("west")},
	)

	// The SPIFFE ID check is enforced: a server expecting another identity
	// refuses the client.
	res := mutualTLS(t,
		mtlsSide{cert: eastLeaf.cert, trust: west.rootPool(), want: spiffeID("east")},
		mtlsSide{cert: westLeaf.cert, trust: east.rootPool(), want: spiffeID("north")},
	)
	if res.serverErr == nil || !strings.Contains(res.serverErr.Error(), spiffeID("north")) {
		t.Errorf("server accepted a client with an unexpected SPIFFE ID: server err %v", res.serverErr)
	}
}

func TestForeignRootRefused(t *testing.T) {
	a := newMeshroot(t)
	a.initRoot()
	east := loadCACerts(t, a.issue("east", true))

	b := newMeshroot(t) // an independent trust domain with the same name
	b.initRoot()
	foreignWest := loadCACerts(t, b.issue("west", true))
	if east.roots[0].Equal(foreignWest.roots[0]) {
		t.Fatal("two root init runs produced the same root")
	}

	eastLeaf := signWorkload(t, east, spiffeID("east"))
	westLeaf := signWorkload(t, foreignWest, spiffeID("west"))

	t.Run("server refuses foreign client", func(t *testing.T) {
		res := mutualTLS(t,
			mtlsSide{cert: eastLeaf.cert, trust: east.rootPool(), want: spiffeID("east")},
			mtlsSide{cert: westLeaf.cert, trust: east.rootPool(), want: spiffeID("west")},
		)
		if res.serverErr == nil {
			t.Fatal("server accepted a client certificate from a foreign root")
		}
		t.Logf("server refused the client: %v", res.serverErr)
		if !isCertVerificationError(res.serverErr) {
			t.Errorf("server error is not a certificate verification error: %v", res.serverErr)
		}
		if res.clientErr == nil {
			t.Error("client completed the round trip although the server refused it")
		}
		if res.serverPeer != "" || res.serverGot != "" {
			t.Errorf("server got past verification: peer %q, read %q", res.serverPeer, res.serverGot)
		}
	})

	t.Run("client refuses foreign server", func(t *testing.T) {
		// The server would accept the client; only the client's trust fails.
		res := mutualTLS(t,
			mtlsSide{cert: eastLeaf.cert, trust: foreignWest.rootPool(), want: spiffeID("east")},
			mtlsSide{cert: westLeaf.cert, trust: foreignWest.rootPool(), want: spiffeID("west")},
		)
		if res.clientErr == nil {
			t.Fatal("client accepted a server certificate from a foreign root")
		}
		t.Logf("client refused the server: %v", res.clientErr)
		if !isCertVerificationError(res.clientErr) {
			t.Errorf("client error is not a certificate verification error: %v", res.clientErr)
		}
		if res.serverErr == nil {
			t.Error("server completed the round trip although the client refused it")
		}
		if res.clientPeer != "" {
			t.Errorf("client accepted peer %q", res.clientPeer)
		}
	})
}

// opensslVerify runs `openssl verify` with -x509_strict and fails unless it
// reports OK.
func opensslVerify(t *testing.T, cafile, untrusted, cert string, extra ...string) {
	t.Helper()
	args := append([]string{"verify", "-x509_strict"}, extra...)
	args = append(args, "-CAfile", cafile, "-untrusted", untrusted, cert)
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Errorf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func requireOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH")
	}
}

func TestOpenSSLVerify(t *testing.T) {
	requireOpenSSL(t)
	m := newMeshroot(t)
	m.initRoot()

	t.Run("istio", func(t *testing.T) {
		dir := m.issue("east", true)
		opensslVerify(t, filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "cert-chain.pem"), filepath.Join(dir, "ca-cert.pem"))

		c := loadCACerts(t, dir)
		leaf := signWorkload(t, c, spiffeID("east"))
		leafFile := writeFile(t, filepath.Join(t.TempDir(), "leaf.pem"), pemCert(leaf.leaf))
		opensslVerify(t, filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "cert-chain.pem"), leafFile, "-purpose", "sslserver")
		opensslVerify(t, filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "cert-chain.pem"), leafFile, "-purpose", "sslclient")
	})

	t.Run("tls", func(t *testing.T) {
		dir := m.issue("west", true, "--format", "tls")
		for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("--format tls: %v", err)
			}
		}
		for _, name := range []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				t.Errorf("--format tls also wrote %s", name)
			}
		}
		opensslVerify(t, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.crt"))

		// tls.crt stops below the root, which is in ca.crt only.
		tlsCrt := readCerts(t, filepath.Join(dir, "tls.crt"))
		caCrt := readCerts(t, filepath.Join(dir, "ca.crt"))
		if len(tlsCrt) != 1 || len(caCrt) != 1 || tlsCrt[0].Equal(caCrt[0]) {
			t.Errorf("tls.crt holds %d certificates and ca.crt %d; want the intermediate and the root", len(tlsCrt), len(caCrt))
		}
		key := readKey(t, filepath.Join(dir, "tls.key"))
		if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tlsCrt[0].PublicKey) {
			t.Error("tls.key does not match tls.crt")
		}
	})
}

// offlineCA is a CA made in Go, outside meshroot.
type offlineCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newOfflineCA makes a CA signed by parent (self-signed when parent is nil)
// with the given path length (-1: unset).
func newOfflineCA(t *testing.T, cn string, parent *offlineCA, pathLen int) *offlineCA {
	t.Helper()
	key := newP256(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{Organization: []string{"Offline Corp"}, CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &offlineCA{cert: cert, key: key}
}

func pkcs8PEM(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestImportedIntermediateChain(t *testing.T) {
	root := newOfflineCA(t, "Offline Root", nil, -1)
	inter := newOfflineCA(t, "Offline Issuing CA", root, 1)
	files := t.TempDir()
	chainFile := writeFile(t, filepath.Join(files, "chain.pem"), append(pemCert(inter.cert), pemCert(root.cert)...))
	keyFile := writeFile(t, filepath.Join(files, "key.pem"), pkcs8PEM(t, inter.key))

	m := newMeshroot(t)
	r := m.ok("root", "import", "--trust-domain", trustDomain, "--cert", chainFile, "--key", keyFile, "--insecure-plaintext-key", "-o", "json")
	var roots []struct {
		State       string `json:"state"`
		ChainLength int    `json:"chain_length"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &roots); err != nil || len(roots) != 1 {
		t.Fatalf("root import -o json: %v\n%s", err, r.stdout)
	}
	if roots[0].State != "active" || roots[0].ChainLength != 2 {
		t.Errorf("imported root: %+v, want active with chain length 2", roots[0])
	}

	eastDir := m.issue("east", true)
	westDir := m.issue("west", true)
	east := loadCACerts(t, eastDir)
	west := loadCACerts(t, westDir)

	if len(east.chain) != 3 {
		t.Fatalf("cert-chain.pem holds %d certificates, want 3 (cluster intermediate, issuing CA, root)", len(east.chain))
	}
	if !east.chain[0].Equal(east.cert) || !east.chain[1].Equal(inter.cert) || !east.chain[2].Equal(root.cert) {
		t.Errorf("cert-chain.pem is not [cluster intermediate, issuing CA, root]: %v, %v, %v",
			east.chain[0].Subject, east.chain[1].Subject, east.chain[2].Subject)
	}
	if len(east.roots) != 1 || !east.roots[0].Equal(root.cert) {
		t.Errorf("root-cert.pem is not exactly the offline root")
	}
	if err := east.cert.CheckSignatureFrom(inter.cert); err != nil {
		t.Errorf("cluster intermediate is not signed by the imported issuing CA: %v", err)
	}

	if _, err := exec.LookPath("openssl"); err == nil {
		opensslVerify(t, filepath.Join(eastDir, "root-cert.pem"), filepath.Join(eastDir, "cert-chain.pem"), filepath.Join(eastDir, "ca-cert.pem"))
		leaf := signWorkload(t, east, spiffeID("east"))
		leafFile := writeFile(t, filepath.Join(t.TempDir(), "leaf.pem"), pemCert(leaf.leaf))
		opensslVerify(t, filepath.Join(eastDir, "root-cert.pem"), filepath.Join(eastDir, "cert-chain.pem"), leafFile)
	} else {
		t.Log("openssl not on PATH: openssl verify skipped")
	}

	assertMutualTLSOK(t,
		mtlsSide{cert: signWorkload(t, east, spiffeID("east")).cert, trust: west.rootPool(), want: spiffeID("east")},
		mtlsSide{cert: signWorkload(t, west, spiffeID("west")).cert, trust: east.rootPool(), want: spiffeID("west")},
	)

	t.Run("refusals", func(t *testing.T) {
		otherKey := writeFile(t, filepath.Join(t.TempDir(), "other.pem"), pkcs8PEM(t, newP256(t)))
		interOnly := writeFile(t, filepath.Join(t.TempDir(), "inter-only.pem"), pemCert(inter.cert))
		zero := newOfflineCA(t, "Pathlen Zero CA", root, 0)
		zeroChain := writeFile(t, filepath.Join(t.TempDir(), "zero-chain.pem"), append(pemCert(zero.cert), pemCert(root.cert)...))
		zeroKey := writeFile(t, filepath.Join(t.TempDir(), "zero-key.pem"), pkcs8PEM(t, zero.key))

		for _, tc := range []struct {
			name      string
			cert, key string
			msgs      []string
		}{
			{"chain without root", interOnly, keyFile, []string{"self-signed root"}},
			{"key does not match", chainFile, otherKey, []string{"key does not match"}},
			{"pathlen 0 CA", zeroChain, zeroKey, []string{"path length 0"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				fresh := newMeshroot(t)
				fresh.refused(3, tc.msgs, "root", "import", "--trust-domain", trustDomain, "--cert", tc.cert, "--key", tc.key, "--insecure-plaintext-key")
				// Nothing was stored.
				r := fresh.ok("root", "list", "-o", "json")
				if strings.TrimSpace(r.stdout) != "[]" {
					t.Errorf("refused import left a root behind: %s", r.stdout)
				}
			})
		}
	})
}

// secret is the part of a Kubernetes Secret the tests read.
type secret struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Type string            `yaml:"type"`
	Data map[string]string `yaml:"data"`
}

// issueYAML runs `intermediate issue -o yaml` in an empty working folder,
// checks that no file was written anywhere outside the data dir, and returns
// the Secret with its data decoded.
func issueYAML(t *testing.T, m *meshroot, cluster string, extra ...string) (secret, map[string][]byte) {
	t.Helper()
	wd := t.TempDir()
	mm := *m
	mm.dir = wd
	args := append([]string{"intermediate", "issue", "--cluster", cluster, "-o", "yaml", "--insecure-plaintext-key"}, extra...)
	r := mm.ok(args...)
	if entries, _ := os.ReadDir(wd); len(entries) != 0 {
		t.Errorf("-o yaml wrote files into the working folder: %v", entries)
	}
	_ = filepath.WalkDir(m.dataDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".pem") && !strings.Contains(path, string(filepath.Separator)+"keys"+string(filepath.Separator)) {
			t.Errorf("-o yaml wrote %s", path)
		}
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".crt") || strings.HasSuffix(path, ".key")) {
			t.Errorf("-o yaml wrote %s", path)
		}
		return nil
	})
	var s secret
	dec := yaml.NewDecoder(strings.NewReader(r.stdout))
	dec.KnownFields(false)
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("-o yaml does not parse: %v\n%s", err, r.stdout)
	}
	data := map[string][]byte{}
	for k, v := range s.Data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("data[%s] is not base64: %v", k, err)
		}
		data[k] = b
	}
	if s.APIVersion != "v1" || s.Kind != "Secret" || s.Metadata.Name != "cacerts" || s.Metadata.Namespace != "istio-system" {
		t.Errorf("Secret header: apiVersion %q kind %q name %q namespace %q, want v1 Secret cacerts in istio-system",
			s.APIVersion, s.Kind, s.Metadata.Name, s.Metadata.Namespace)
	}
	return s, data
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestSecretYAML(t *testing.T) {
	m := newMeshroot(t)
	m.initRoot()
	m.ok("cluster", "add", "east")
	var roots []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(m.ok("root", "list", "-o", "json").stdout), &roots); err != nil || len(roots) != 1 {
		t.Fatalf("root list -o json: %v", err)
	}

	t.Run("istio", func(t *testing.T) {
		s, data := issueYAML(t, m, "east")
		if s.Type != "Opaque" {
			t.Errorf("type %q, want Opaque", s.Type)
		}
		want := []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"}
		if got := sortedKeys(data); !slices.Equal(got, want) {
			t.Fatalf("data keys %v, want %v", got, want)
		}
		cert := parseCerts(t, "ca-cert.pem", data["ca-cert.pem"])[0]
		key := parseKey(t, "ca-key.pem", data["ca-key.pem"])
		if !key.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
			t.Error("ca-key.pem does not match ca-cert.pem")
		}
		chain := parseCerts(t, "cert-chain.pem", data["cert-chain.pem"])
		rootsPEM := parseCerts(t, "root-cert.pem", data["root-cert.pem"])
		if len(chain) != 2 || !chain[0].Equal(cert) || !chain[1].Equal(rootsPEM[0]) {
			t.Error("cert-chain.pem is not [ca-cert.pem, root]")
		}

		wantAnn := map[string]string{
			"meshroot.io/serial":          fmt.Sprintf("%x", cert.SerialNumber),
			"meshroot.io/not-after":       cert.NotAfter.UTC().Format(time.RFC3339),
			"meshroot.io/root-id":         roots[0].ID,
			"meshroot.io/bundle-sequence": "1",
		}
		for k, v := range wantAnn {
			if got, ok := s.Metadata.Annotations[k]; !ok || got != v {
				t.Errorf("annotation %s = %q (present %v), want %q", k, got, ok, v)
			}
		}
		if wantAnn["meshroot.io/serial"] != strings.ToLower(wantAnn["meshroot.io/serial"]) {
			t.Error("serial is not lower-case hex")
		}
	})

	t.Run("tls", func(t *testing.T) {
		s, data := issueYAML(t, m, "east", "--format", "tls")
		if s.Type != "kubernetes.io/tls" {
			t.Errorf("type %q, want kubernetes.io/tls", s.Type)
		}
		want := []string{"ca.crt", "tls.crt", "tls.key"}
		if got := sortedKeys(data); !slices.Equal(got, want) {
			t.Fatalf("data keys %v, want %v", got, want)
		}
		cert := parseCerts(t, "tls.crt", data["tls.crt"])[0]
		if got := s.Metadata.Annotations["meshroot.io/serial"]; got != fmt.Sprintf("%x", cert.SerialNumber) {
			t.Errorf("serial annotation %q does not match tls.crt", got)
		}
		if len(s.Metadata.Annotations) < 4 {
			t.Errorf("annotations: %v", s.Metadata.Annotations)
		}
	})
}

// makeCSR writes a PEM CSR for key (with tmpl's fields) and returns its path.
func makeCSR(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest, corrupt bool) string {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "east"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	if corrupt {
		der[len(der)-1] ^= 0x01 // last byte of the signature value
	}
	return writeFile(t, filepath.Join(t.TempDir(), "csr.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestCSRMode(t *testing.T) {
	m := newMeshroot(t)
	m.initRoot()
	m.ok("cluster", "add", "east")

	key := newP256(t)
	csrFile := makeCSR(t, key, nil, false)
	out := filepath.Join(t.TempDir(), "east")
	m.ok("intermediate", "issue", "--cluster", "east", "--csr", csrFile, "--out", out, "--insecure-plaintext-key")

	for _, name := range []string{"ca-cert.pem", "cert-chain.pem", "root-cert.pem"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("CSR mode: %v", err)
		}
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if e.Name() == "ca-key.pem" || strings.Contains(e.Name(), "key") {
			t.Errorf("CSR mode wrote a key file %s: the key stays with whoever made the CSR", e.Name())
		}
	}
	cert := readCerts(t, filepath.Join(out, "ca-cert.pem"))[0]
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("the certificate's public key is not the CSR's")
	}
	roots := x509.NewCertPool()
	for _, r := range readCerts(t, filepath.Join(out, "root-cert.pem")) {
		roots.AddCert(r)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("CSR-issued intermediate does not verify to root-cert.pem: %v", err)
	}

	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	garbage := writeFile(t, filepath.Join(t.TempDir(), "garbage.csr"), []byte("this is not a CSR\x00\x01\x02\xff"))

	for _, tc := range []struct {
		name string
		args []string
		msgs []string
	}{
		{"corrupted signature", []string{"--csr", makeCSR(t, newP256(t), nil, true)}, []string{"signature"}},
		{"P-224 key", []string{"--csr", makeCSR(t, p224, nil, false)}, []string{"P-224"}},
		{"SAN requested", []string{"--csr", makeCSR(t, newP256(t), &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "east"}, DNSNames: []string{"istiod.istio-system.svc"},
		}, false)}, []string{"subjectAltName"}},
		{"not PEM", []string{"--csr", garbage}, []string{"cannot be parsed"}},
		{"TTL beyond policy", []string{"--csr", csrFile, "--ttl", "100000h"}, []string{"policy maximum"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := append([]string{"intermediate", "issue", "--cluster", "east", "--out", out, "--insecure-plaintext-key"}, tc.args...)
			m.refused(3, tc.msgs, args...)
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused issue created %s", out)
			}
		})
	}

	// Only the one good request was recorded.
	var list []struct {
		Serial string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(m.ok("intermediate", "list", "-o", "json").stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Serial != fmt.Sprintf("%x", cert.SerialNumber) {
		t.Errorf("intermediate list after refusals: %+v, want only %x", list, cert.SerialNumber)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

func TestFilePermissions(t *testing.T) {
	const pass = "correct horse battery staple"
	base := newMeshroot(t)
	m := base.with("MESHROOT_PASSPHRASE=" + pass)
	m.ok("root", "init", "--trust-domain", trustDomain)
	m.ok("cluster", "add", "east")

	keys, err := filepath.Glob(filepath.Join(m.dataDir, "keys", "*.key.pem"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("no key files in %s/keys (%v)", m.dataDir, err)
	}
	for _, k := range keys {
		if mode := fileMode(t, k); mode != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", k, mode)
		}
		data, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
			t.Errorf("%s is not an encrypted PKCS#8 key: starts with %q", k, data[:min(len(data), 40)])
		}
	}
	if mode := fileMode(t, filepath.Join(m.dataDir, "meshroot.db")); mode != 0o600 {
		t.Errorf("meshroot.db has mode %04o, want 0600", mode)
	}
	for _, side := range []string{"-wal", "-shm"} {
		if info, err := os.Stat(filepath.Join(m.dataDir, "meshroot.db"+side)); err == nil && info.Mode().Perm() != 0o600 {
			t.Errorf("meshroot.db%s has mode %04o, want 0600", side, info.Mode().Perm())
		}
	}
	if mode := fileMode(t, filepath.Join(m.dataDir, "keys")); mode != 0o700 {
		t.Errorf("keys folder has mode %04o, want 0700", mode)
	}

	out := filepath.Join(t.TempDir(), "east")
	m.ok("intermediate", "issue", "--cluster", "east", "--out", out)
	if mode := fileMode(t, filepath.Join(out, "ca-key.pem")); mode != 0o600 {
		t.Errorf("ca-key.pem has mode %04o, want 0600", mode)
	}
	for _, name := range []string{"ca-cert.pem", "cert-chain.pem", "root-cert.pem"} {
		if mode := fileMode(t, filepath.Join(out, name)); mode&0o022 != 0 {
			t.Errorf("%s has mode %04o: writable by others", name, mode)
		}
	}

	t.Run("wrong passphrase", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		r := base.with("MESHROOT_PASSPHRASE=not the passphrase").run("intermediate", "issue", "--cluster", "east", "--out", out)
		if r.code == 0 {
			t.Fatalf("issue with a wrong passphrase succeeded: %s", r)
		}
		if !strings.Contains(r.stderr, "passphrase") {
			t.Errorf("error does not mention the passphrase: %s", r.stderr)
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed issue created %s", out)
		}
	})

	t.Run("no passphrase", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		r := base.run("intermediate", "issue", "--cluster", "east", "--out", out)
		if r.code == 0 {
			t.Fatalf("issue without a passphrase succeeded: %s", r)
		}
		for _, s := range []string{"MESHROOT_PASSPHRASE", "--passphrase-file"} {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("error does not tell how to give a passphrase (%s): %s", s, r.stderr)
			}
		}
	})
}

// auditRow is one row of `audit list -o json`.
type auditRow struct {
	Seq     int64  `json:"seq"`
	Action  string `json:"action"`
	Target  string `json:"target"`
	Result  string `json:"result"`
	Details string `json:"details"`
}

func auditList(t *testing.T, m *meshroot) []auditRow {
	t.Helper()
	var rows []auditRow
	r := m.ok("audit", "list", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("audit list -o json: %v\n%s", err, r.stdout)
	}
	return rows
}

func TestAuditTamper(t *testing.T) {
	m := newMeshroot(t)
	m.initRoot()
	m.issue("east", true)

	// Every refused command leaves exactly one "denied" row naming it.
	for _, tc := range []struct {
		action, target string
		args           []string
	}{
		{"intermediate.issue", "ghost", []string{"intermediate", "issue", "--cluster", "ghost", "--out", filepath.Join(t.TempDir(), "g"), "--insecure-plaintext-key"}},
		{"intermediate.issue", "east", []string{"intermediate", "issue", "--cluster", "east", "--ttl", "100000h", "--out", filepath.Join(t.TempDir(), "e"), "--insecure-plaintext-key"}},
		{"cluster.add", "east", []string{"cluster", "add", "east"}},
		{"cluster.add", "BAD_NAME", []string{"cluster", "add", "BAD_NAME"}},
		{"root.init", trustDomain, []string{"root", "init", "--trust-domain", trustDomain, "--insecure-plaintext-key"}},
	} {
		before := auditList(t, m)
		m.refused(3, nil, tc.args...)
		after := auditList(t, m)
		if len(after) != len(before)+1 {
			t.Errorf("meshroot %s: %d new audit rows, want 1", strings.Join(tc.args, " "), len(after)-len(before))
			continue
		}
		last := after[len(after)-1]
		if last.Result != "denied" || last.Action != tc.action || last.Target != tc.target {
			t.Errorf("meshroot %s: audit row %+v, want %s on %s denied", strings.Join(tc.args, " "), last, tc.action, tc.target)
		}
		if !strings.Contains(last.Details, "reason") {
			t.Errorf("denied row has no reason: %s", last.Details)
		}
	}

	t.Run("refused CSR is audited", func(t *testing.T) {
		garbage := writeFile(t, filepath.Join(t.TempDir(), "garbage.csr"), []byte("not a CSR"))
		before := auditList(t, m)
		m.refused(3, nil, "intermediate", "issue", "--cluster", "east", "--csr", garbage, "--out", filepath.Join(t.TempDir(), "o"), "--insecure-plaintext-key")
		after := auditList(t, m)
		if len(after) != len(before)+1 || after[len(after)-1].Result != "denied" {
			t.Errorf("refused CSR left %d new audit rows", len(after)-len(before))
		}
	})

	r := m.ok("audit", "verify")
	rows := auditList(t, m)
	if !strings.Contains(r.stdout, fmt.Sprintf("%d entries", len(rows))) {
		t.Errorf("audit verify output does not count %d entries: %s", len(rows), r.stdout)
	}

	// Tamper with row 2 (cluster.add east) behind meshroot's back.
	const seq = 2
	db, err := sql.Open("sqlite", filepath.Join(m.dataDir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, `UPDATE audit_log SET details = ? WHERE seq = ?`, `{"tampered":true}`, seq); err == nil {
		t.Error("UPDATE of audit_log succeeded: the append-only trigger is missing")
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER audit_log_no_update`); err != nil {
		t.Fatal(err)
	}
	res, err := db.ExecContext(ctx, `UPDATE audit_log SET details = ? WHERE seq = ?`, `{"tampered":true}`, seq)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("tamper UPDATE changed %d rows", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	m.refused(4, []string{fmt.Sprintf("seq %d", seq)}, "audit", "verify")
}

// TestTrustDomainConstraint issues an intermediate with
// --trust-domain-constraint and checks, with two independent verifiers (Go's,
// as in Istio, and openssl), that it can sign identities of its own trust
// domain only.
func TestTrustDomainConstraint(t *testing.T) {
	requireOpenSSL(t)
	m := newMeshroot(t)
	m.initRoot()
	c := loadCACerts(t, m.issue("east", true, "--trust-domain-constraint"))
	if !c.cert.PermittedDNSDomainsCritical || len(c.cert.PermittedURIDomains) != 1 || c.cert.PermittedURIDomains[0] != trustDomain {
		t.Fatalf("intermediate constraints: permitted %v (critical %v), want [%s] critical", c.cert.PermittedURIDomains, c.cert.PermittedDNSDomainsCritical, trustDomain)
	}
	inters := x509.NewCertPool()
	inters.AddCert(c.cert)
	dir := t.TempDir()
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{spiffeID("east"), true},
		{"spiffe://other.org/ns/east/sa/app", false},
		{"spiffe://sub." + trustDomain + "/ns/east/sa/app", false},
	} {
		w := signWorkload(t, c, tc.id)
		_, err := w.leaf.Verify(x509.VerifyOptions{Roots: c.rootPool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if (err == nil) != tc.ok {
			t.Errorf("Go verifier, leaf %s: %v, want ok=%v", tc.id, err, tc.ok)
		}
		leafFile := writeFile(t, filepath.Join(dir, "leaf.pem"), pemCert(w.leaf))
		out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(c.dir, "root-cert.pem"),
			"-untrusted", filepath.Join(c.dir, "cert-chain.pem"), leafFile).CombinedOutput()
		if (err == nil) != tc.ok {
			t.Errorf("openssl, leaf %s: %v, want ok=%v\n%s", tc.id, err, tc.ok, out)
		}
	}
}
