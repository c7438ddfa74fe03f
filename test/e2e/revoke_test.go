package e2e

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRevokeCrossSignedRoot: after `root prepare --cross-sign` and
// `root activate`, every cert-chain.pem carries the cross certificate (the
// new root P certified by the old root A). `root revoke P --emergency`
// must end trust in whatever P's key signs: a chain minted with P's key and
// presented with that public cross certificate, and the workload chain of a
// cluster intermediate under P, are refused, against the bundle the server
// serves after the revocation, by Go's verifier, by `openssl verify` and by
// Istio's peer verifier (Istio's own code, test/tools/istiosigner). The dry
// run names the old root as going too.
func TestRevokeCrossSignedRoot(t *testing.T) {
	requireOpenSSL(t)
	signer := startIstioVerifier(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	s := startServe(t, dir, "--data-dir", dataDir, "--insecure-plaintext-key", "--san", "127.0.0.1")
	m := newMeshroot(t)
	m.socket = s.socket

	m.ok("root", "init", "--trust-domain", trustDomain)
	s.waitReady(t)
	oldID := oneActiveRoot(t, m).ID
	m.ok("cluster", "add", "east")
	m.ok("root", "prepare", "--cross-sign")
	m.ok("root", "activate", "--force") // east has no agent to report the bundle
	var p rootRow
	for _, r := range listRoots(t, m) {
		if r.State == "active" {
			p = r
		}
	}
	if p.ID == "" || p.ID == oldID {
		t.Fatalf("after activate the active root is %q (old %s)", p.ID, oldID)
	}
	out := filepath.Join(t.TempDir(), "east")
	m.ok("intermediate", "issue", "--cluster", "east", "--out", out)
	east := loadCACerts(t, out)
	if len(east.chain) != 3 || rootIDOf(east.chain[2]) != oldID {
		t.Fatalf("cert-chain.pem under the cross-signed root: %d certificates; want intermediate, cross certificate, old root", len(east.chain))
	}
	cross := east.chain[1]

	// Whoever holds P's key (here read from the plaintext dev key file)
	// mints a CA and a leaf, and presents them with the cross certificate.
	pKey := readKey(t, filepath.Join(dataDir, "keys", strings.TrimPrefix(p.KeyRef, "disk:")+".key.pem"))
	mintedCA, mintedKey := mintCert(t, cross, pKey, true, "")
	minted, _ := mintCert(t, mintedCA, mintedKey, false, "spiffe://"+trustDomain+"/ns/attacker/sa/x")
	chains := map[string][]*x509.Certificate{
		"minted with P's key": {minted, mintedCA, cross},
		"east's workload":     append([]*x509.Certificate{signWorkload(t, east, spiffeID("east")).leaf}, east.chain[:2]...),
	}

	before := servedBundle(t, m)
	for name, chain := range chains {
		if err := verifyAll(t, signer, before, chain); err != nil {
			t.Fatalf("%s, before the revocation: %v (the attack's premise: it verifies)", name, err)
		}
	}

	dry := m.ok("root", "revoke", p.ID, "--emergency", "--dry-run", "-o", "json").stdout
	if !strings.Contains(dry, oldID) || !strings.Contains(dry, "cross-signed") {
		t.Errorf("the dry run does not say that the cross-signing root %s leaves the bundle too:\n%s", oldID, dry)
	}
	m.ok("root", "revoke", p.ID, "--emergency")

	after := servedBundle(t, m)
	for _, r := range after {
		if id := rootIDOf(r); id == oldID || id == p.ID {
			t.Errorf("the served bundle still holds root %s", id)
		}
	}
	if len(after) != 1 {
		t.Errorf("the served bundle holds %d roots after the revocation, want the replacement only", len(after))
	}
	for name, chain := range chains {
		goErr, sslErr, istioErr := verifyEach(t, signer, after, chain)
		t.Logf("%s against the bundle after the revocation: Go: %v; openssl: %v; Istio: %v", name, goErr, sslErr, istioErr)
		var ua x509.UnknownAuthorityError
		if !errors.As(goErr, &ua) {
			t.Errorf("%s: Go's verifier: %v; want an unknown-authority refusal", name, goErr)
		}
		if sslErr == nil {
			t.Errorf("%s: openssl verify accepted it", name)
		}
		if istioErr == nil || !strings.Contains(istioErr.Error(), "unknown authority") {
			t.Errorf("%s: Istio's PeerCertVerifier: %v; want an unknown-authority refusal", name, istioErr)
		}
	}
	// The replacement root issues, and its chains verify everywhere.
	next := filepath.Join(t.TempDir(), "east2")
	m.ok("intermediate", "issue", "--cluster", "east", "--out", next)
	e2 := loadCACerts(t, next)
	fresh := append([]*x509.Certificate{signWorkload(t, e2, spiffeID("east")).leaf}, e2.chain[:len(e2.chain)-1]...)
	if err := verifyAll(t, signer, after, fresh); err != nil {
		t.Errorf("a workload under the replacement root: %v", err)
	}
}

// rootIDOf is meshroot's root ID: the first 16 bytes of the SHA-256 of
// the certificate's DER, hex encoded.
func rootIDOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:16])
}

// servedBundle is the trust bundle the server serves (`bundle show` over
// its admin socket).
func servedBundle(t *testing.T, m *meshroot) []*x509.Certificate {
	t.Helper()
	return parseCerts(t, "bundle show", []byte(m.ok("bundle", "show").stdout))
}

// mintCert signs a certificate for a new key under parent.
func mintCert(t *testing.T, parent *x509.Certificate, parentKey crypto.Signer, isCA bool, id string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newP256(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(t), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if isCA {
		tmpl.Subject = pkix.Name{CommonName: "minted CA"}
	} else {
		u, _ := url.Parse(id)
		tmpl.URIs, tmpl.KeyUsage = []*url.URL{u}, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// verifyAll is nil when all three verifiers accept chain (leaf first)
// against roots.
func verifyAll(t *testing.T, v *istioVerifier, roots, chain []*x509.Certificate) error {
	t.Helper()
	goErr, sslErr, istioErr := verifyEach(t, v, roots, chain)
	return errors.Join(goErr, sslErr, istioErr)
}

// verifyEach checks chain (leaf first, then what the peer presents)
// against roots with Go's x509, `openssl verify -x509_strict` and Istio's
// PeerCertVerifier.
func verifyEach(t *testing.T, v *istioVerifier, roots, chain []*x509.Certificate) (goErr, sslErr, istioErr error) {
	t.Helper()
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	var rootsPEM, interPEM []byte
	for _, r := range roots {
		pool.AddCert(r)
		rootsPEM = append(rootsPEM, pemCert(r)...)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
		interPEM = append(interPEM, pemCert(c)...)
	}
	_, goErr = chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	d := t.TempDir()
	args := []string{"verify", "-x509_strict", "-purpose", "sslclient",
		"-CAfile", writeFile(t, filepath.Join(d, "roots.pem"), rootsPEM),
		"-untrusted", writeFile(t, filepath.Join(d, "chain.pem"), interPEM),
		writeFile(t, filepath.Join(d, "leaf.pem"), pemCert(chain[0]))}
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil || !strings.Contains(string(out), ": OK") {
		sslErr = fmt.Errorf("openssl verify: %v: %s", err, strings.TrimSpace(string(out)))
	}
	istioErr = v.verify(t, roots, chain)
	return goErr, sslErr, istioErr
}

// istioVerifier is a running `istiosigner -serve`, used for its /verify:
// istiod's peer check (pkg/spiffe PeerCertVerifier) with the roots mapped
// to the trust domain.
type istioVerifier struct{ base string }

// istioSignerBin is $MESHROOT_ISTIOSIGNER, or the binary test/tools/build.sh
// builds (once per machine, cached by a hash of its sources).
func istioSignerBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHROOT_ISTIOSIGNER"); p != "" {
		return p
	}
	var stdout bytes.Buffer
	cmd := exec.Command("bash", filepath.Join("..", "tools", "build.sh"), "istiosigner")
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr // a cold build shows its progress
	if err := cmd.Run(); err != nil {
		t.Fatalf("test/tools/build.sh istiosigner: %v", err)
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if p, ok := strings.CutPrefix(line, "istiosigner "); ok {
			return strings.TrimSpace(p)
		}
	}
	t.Fatalf("test/tools/build.sh istiosigner printed no binary path: %q", stdout.String())
	return ""
}

func startIstioVerifier(t *testing.T) *istioVerifier {
	t.Helper()
	bin := istioSignerBin(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-serve", addr)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	v := &istioVerifier{base: "http://" + addr}
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := http.Get(v.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("istiosigner -serve %s did not answer /healthz: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verify asks Istio's PeerCertVerifier about chain (leaf first) with roots.
func (v *istioVerifier) verify(t *testing.T, roots, chain []*x509.Certificate) error {
	t.Helper()
	req := struct {
		TrustDomain string   `json:"trust_domain"`
		RootsPEM    string   `json:"roots_pem"`
		ChainDER    [][]byte `json:"chain_der"`
	}{TrustDomain: trustDomain}
	for _, r := range roots {
		req.RootsPEM += string(pemCert(r))
	}
	for _, c := range chain {
		req.ChainDER = append(req.ChainDER, c.Raw)
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(v.base+"/verify", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("istiosigner /verify: %v", err)
	}
	defer resp.Body.Close()
	var res struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("istiosigner /verify: %s: %v %s", resp.Status, err, res.Error)
	}
	if !res.OK {
		return fmt.Errorf("Istio's PeerCertVerifier: %s", res.Error)
	}
	return nil
}
