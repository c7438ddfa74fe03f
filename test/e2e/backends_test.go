package e2e

// End-to-end tests of the root key backends: the meshroot binary with its
// root key in a real SoftHSM2 token (PKCS#11), in a real Vault's Transit
// engine, in go.step.sm's softkms, and with Vault's PKI engine as the
// signing authority (upstream), on its own and behind `meshroot serve`.
// Every cluster intermediate is checked with openssl and by a mutual-TLS
// round trip between workload leaves of two clusters.

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	meshrootca "github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys/pkcs11/softhsmtest"
	"github.com/meshroot/meshroot/test/vaultenv"
)

// ---------------------------------------------------------------------------
// Helpers

// rootRow is one row of `root list -o json`.
type rootRow struct {
	ID          string `json:"id"`
	TrustDomain string `json:"trust_domain"`
	State       string `json:"state"`
	KeyRef      string `json:"key_ref"`
	ChainLength int    `json:"chain_length"`
}

// listRoots runs `root list -o json` and returns its rows.
func listRoots(t *testing.T, m *meshroot) []rootRow {
	t.Helper()
	r := m.ok("root", "list", "-o", "json")
	var rows []rootRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("root list -o json: %v\n%s", err, r.stdout)
	}
	return rows
}

// oneActiveRoot returns the single root, which must be active.
func oneActiveRoot(t *testing.T, m *meshroot) rootRow {
	t.Helper()
	rows := listRoots(t, m)
	if len(rows) != 1 || rows[0].State != "active" || rows[0].TrustDomain != trustDomain {
		t.Fatalf("root list: %+v, want one active root of %s", rows, trustDomain)
	}
	return rows[0]
}

// assertNoPrivateKey fails if any file under dir holds a private key (PEM
// of any flavour), or if its keys/ folder holds a key file: the root key
// lives in the backend, never in the data dir.
func assertNoPrivateKey(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "keys"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("the data dir's keys/ folder holds %s: the root key must stay in its backend", e.Name())
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Errorf("read %s: %v", path, rerr)
			return nil
		}
		if bytes.Contains(b, []byte("PRIVATE KEY-----")) {
			t.Errorf("%s holds a private key", path)
		}
		return nil
	})
}

// checkIntermediate loads a cacerts folder and checks what every backend
// must give: a pathlen-0 CA that openssl verifies up to root-cert.pem,
// which holds exactly want (when set), and a workload leaf that verifies
// under it.
func checkIntermediate(t *testing.T, dir, cluster string, want *x509.Certificate) *cacerts {
	t.Helper()
	c := loadCACerts(t, dir)
	if !c.cert.IsCA || c.cert.MaxPathLen != 0 || !c.cert.MaxPathLenZero || c.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("%s: intermediate is not a pathlen-0 CA with keyCertSign (IsCA %v, MaxPathLen %d, zero %v, usage %b)",
			cluster, c.cert.IsCA, c.cert.MaxPathLen, c.cert.MaxPathLenZero, c.cert.KeyUsage)
	}
	if c.cert.Subject.CommonName != cluster {
		t.Errorf("%s: intermediate subject %q", cluster, c.cert.Subject)
	}
	if len(c.roots) != 1 {
		t.Fatalf("%s: root-cert.pem holds %d certificates, want 1", cluster, len(c.roots))
	}
	if want != nil && !c.roots[0].Equal(want) {
		t.Errorf("%s: root-cert.pem is %q, not the expected root %q", cluster, c.roots[0].Subject, want.Subject)
	}
	if last := c.chain[len(c.chain)-1]; !last.Equal(c.roots[0]) {
		t.Errorf("%s: cert-chain.pem ends at %q, not at root-cert.pem", cluster, last.Subject)
	}
	opensslVerify(t, filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "cert-chain.pem"), filepath.Join(dir, "ca-cert.pem"))
	leaf := signWorkload(t, c, spiffeID(cluster))
	leafFile := writeFile(t, filepath.Join(t.TempDir(), cluster+"-leaf.pem"), pemCert(leaf.leaf))
	opensslVerify(t, filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "cert-chain.pem"), leafFile, "-purpose", "sslclient")
	return c
}

// assertClustersTalk runs mutual TLS between a workload of east and one of
// west, each trusting only the other's root-cert.pem.
func assertClustersTalk(t *testing.T, east, west *cacerts) {
	t.Helper()
	assertMutualTLSOK(t,
		mtlsSide{cert: signWorkload(t, east, spiffeID("east")).cert, trust: west.rootPool(), want: spiffeID("east")},
		mtlsSide{cert: signWorkload(t, west, spiffeID("west")).cert, trust: east.rootPool(), want: spiffeID("west")},
	)
}

// failedCleanly checks a failed run: exit code want (1: an error that is
// neither a usage error nor a policy refusal), no panic, every one of msgs
// in stderr (case-insensitive), and no output folder created.
func failedCleanly(t *testing.T, r result, want int, out string, msgs ...string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("want a failure, got %s", r)
		return
	}
	if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "goroutine ") {
		t.Errorf("meshroot panicked: %s", r)
	}
	if r.code != want {
		t.Errorf("exit code %d, want %d: %s", r.code, want, r)
	}
	low := strings.ToLower(r.stderr)
	for _, s := range msgs {
		if !strings.Contains(low, strings.ToLower(s)) {
			t.Errorf("stderr does not mention %q:\n%s", s, r.stderr)
		}
	}
	if out != "" {
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed issue created %s", out)
		}
	}
}

// issueArgs is `intermediate issue` for cluster into out, after the global
// flags in pre.
func issueArgs(pre []string, cluster, out string) []string {
	return append(append([]string{}, pre...), "intermediate", "issue", "--cluster", cluster, "--out", out)
}

// bundleRoot returns the single root of `bundle show`.
func bundleRoot(t *testing.T, m *meshroot) *x509.Certificate {
	t.Helper()
	roots := parseCerts(t, "bundle show", []byte(m.ok("bundle", "show").stdout))
	if len(roots) != 1 {
		t.Fatalf("bundle show: %d roots, want 1", len(roots))
	}
	return roots[0]
}

// noDiskPassphrase is passed where a command still opens the disk key
// manager although no disk key is involved (see
// TestRootInVaultPKI/"issue needs no disk passphrase"): it lets the rest
// of the test run; it creates no key.
const noDiskPassphrase = "--insecure-plaintext-key"

// ---------------------------------------------------------------------------
// SoftHSM2 (PKCS#11)

// removeTokenObjects deletes every object of the throwaway token (only the
// root's key pair is in it) from SoftHSM2's file store, as if someone had
// destroyed the key in the HSM. No process has the token open meanwhile.
func removeTokenObjects(t *testing.T, tok *softhsmtest.Token) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(tok.Dir, "tokens", "*", "*.object"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "token.object" {
			continue
		}
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(strings.TrimSuffix(f, ".object") + ".lock")
		n++
	}
	return n
}

// carriesPIN reports whether a PKCS#11 URI has a pin-value attribute or
// an attribute whose value is pin, and names it.
func carriesPIN(uri, pin string) (string, bool) {
	for k, v := range uriValues(uri) {
		if k == "pin-value" || v == pin {
			return k + "=" + v, true
		}
	}
	return "", false
}

// uriValues returns the values of a PKCS#11 URI's path and query
// attributes ("k=v" separated by ';', '?' and '&'), by name.
func uriValues(uri string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.FieldsFunc(strings.TrimPrefix(uri, "pkcs11:"), func(r rune) bool { return r == ';' || r == '?' || r == '&' }) {
		k, v, _ := strings.Cut(part, "=")
		out[k] = v
	}
	return out
}

func TestRootInSoftHSM2(t *testing.T) {
	requireOpenSSL(t)
	tok := softhsmtest.NewToken(t) // sets SOFTHSM2_CONF, which the binary inherits
	key := tok.URI()
	keyFlag := []string{"--key", key}
	m := newMeshroot(t)

	// No passphrase and no --insecure-plaintext-key: nothing goes to disk.
	m.ok(append(keyFlag, "root", "init", "--trust-domain", trustDomain)...)
	root := oneActiveRoot(t, m)
	if !strings.HasPrefix(root.KeyRef, "pkcs11:") {
		t.Fatalf("key_ref %q does not start with pkcs11:", root.KeyRef)
	}
	// The PIN as an attribute's value, not as a substring: the object's
	// label carries the time of day (root-20261202-001234-...), which
	// held "1234", the test token's PIN, at 00:12:34.
	if attr, ok := carriesPIN(root.KeyRef, tok.PIN); ok {
		t.Errorf("key_ref %q carries the PIN (%s)", root.KeyRef, attr)
	}
	if _, ok := carriesPIN(tok.URIWithPIN(tok.PIN), tok.PIN); !ok {
		t.Errorf("the check does not see the PIN in %q", tok.URIWithPIN(tok.PIN))
	}
	if !strings.Contains(root.KeyRef, "pin-source="+tok.PINFile) || !strings.Contains(root.KeyRef, "token="+tok.Label) {
		t.Errorf("key_ref %q does not name the token %s and the PIN file %s", root.KeyRef, tok.Label, tok.PINFile)
	}
	if audit := m.ok("audit", "list", "-o", "json").stdout; strings.Contains(audit, "pin-value") {
		t.Errorf("the audit log carries a PIN value:\n%s", audit)
	}
	assertNoPrivateKey(t, m.dataDir)

	m.ok("cluster", "add", "east")
	m.ok("cluster", "add", "west")
	eastDir := filepath.Join(t.TempDir(), "east")
	westDir := filepath.Join(t.TempDir(), "west")
	m.ok(issueArgs(keyFlag, "east", eastDir)...)
	m.ok(issueArgs(keyFlag, "west", westDir)...)
	rootCert := bundleRoot(t, m)
	east := checkIntermediate(t, eastDir, "east", rootCert)
	west := checkIntermediate(t, westDir, "west", rootCert)
	assertClustersTalk(t, east, west)
	assertNoPrivateKey(t, m.dataDir)

	// The key reference names the module, the token and the PIN file, but
	// the module is a library loaded into meshroot: only the configuration
	// may name it (issue 9 item 8). Without --key the stored reference is
	// refused, with or without a disk passphrase; with --key alone (no disk
	// passphrase: there is no disk key) it is enough.
	t.Run("the module comes from the configuration only", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		r := m.with("MESHROOT_PASSPHRASE=correct horse battery").run(issueArgs(nil, "east", out)...)
		failedCleanly(t, r, 2, out, "pkcs11", "configuration names no PKCS#11 module", "--key pkcs11:")
		r = m.run(issueArgs(nil, "east", out)...)
		failedCleanly(t, r, 2, out, "pkcs11", "configuration names no PKCS#11 module")
		out = filepath.Join(t.TempDir(), "east2")
		if r := m.run(issueArgs(keyFlag, "east", out)...); r.code != 0 {
			t.Errorf("issue with --key and without a disk passphrase failed: %s", r)
		}
	})

	t.Run("wrong PIN file", func(t *testing.T) {
		if err := os.WriteFile(tok.PINFile, []byte("0000\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}()
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(keyFlag, "east", out)...)
		failedCleanly(t, r, 1, out, "pkcs11", "PIN", tok.PINFile)
	})

	// With the right PIN again, issuance works.
	m.ok(issueArgs(keyFlag, "east", filepath.Join(t.TempDir(), "east-again"))...)

	t.Run("key deleted from the token", func(t *testing.T) {
		if n := removeTokenObjects(t, tok); n == 0 {
			t.Fatal("the token held no objects")
		}
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(keyFlag, "east", out)...)
		failedCleanly(t, r, 1, out, "pkcs11", "no such key", "deleted")
		// The store is intact: roots and the bundle are still shown.
		if got := oneActiveRoot(t, m); got.ID != root.ID {
			t.Errorf("root list after the key was deleted: %+v", got)
		}
		if !bundleRoot(t, m).Equal(rootCert) {
			t.Error("bundle show changed after the key was deleted")
		}
	})

	t.Run("token deleted", func(t *testing.T) {
		tok.Delete(t)
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(keyFlag, "east", out)...)
		failedCleanly(t, r, 1, out, "pkcs11", "token")
	})
}

// ---------------------------------------------------------------------------
// Vault Transit

// transitPolicy is the least a Transit root needs. docs/keys.md asks for
// "read, create" on transit/keys/NAME, but Vault checks "update" there.
const transitPolicy = `
path "transit/keys/*" { capabilities = ["read", "update"] }
path "transit/sign/*" { capabilities = ["update"] }
`

// transitKeyName is the Transit key name in a vault-transit:// reference.
func transitKeyName(t *testing.T, ref string) string {
	t.Helper()
	name, ok := strings.CutPrefix(ref, "vault-transit://transit/")
	if !ok || name == "" || strings.ContainsAny(name, "/?") {
		t.Fatalf("key_ref %q is not vault-transit://transit/NAME", ref)
	}
	return name
}

func TestRootInVaultTransit(t *testing.T) {
	requireOpenSSL(t)
	v := vaultenv.Start(t)
	v.EnableTransit(t, "transit")
	v.PutPolicy(t, "meshroot-transit", transitPolicy)
	tokenFile := vaultenv.WriteFile(t, "token", v.Token(t, "meshroot-transit"))
	vaultFlags := []string{"--vault-addr", v.Addr, "--vault-token-file", tokenFile}
	keyFlags := append([]string{"--key", "vault-transit://transit"}, vaultFlags...)
	m := newMeshroot(t)

	m.ok(append(keyFlags, "root", "init", "--trust-domain", trustDomain)...)
	root := oneActiveRoot(t, m)
	if !strings.HasPrefix(root.KeyRef, "vault-transit://") {
		t.Fatalf("key_ref %q does not start with vault-transit://", root.KeyRef)
	}
	name := transitKeyName(t, root.KeyRef)
	assertNoPrivateKey(t, m.dataDir)

	// The root certificate's key is the Transit key, which cannot leave Vault.
	rootCert := bundleRoot(t, m)
	s, err := v.Client(t).Logical().Read("transit/keys/" + name)
	if err != nil || s == nil {
		t.Fatalf("read transit/keys/%s: %v", name, err)
	}
	if exp, _ := s.Data["exportable"].(bool); exp {
		t.Errorf("Transit key %s is exportable", name)
	}
	keys, _ := s.Data["keys"].(map[string]any)
	v1, _ := keys["1"].(map[string]any)
	pubPEM, _ := v1["public_key"].(string)
	if pubPEM == "" {
		t.Fatalf("transit/keys/%s has no public key for version 1: %v", name, s.Data)
	}
	block, _ := pem.Decode([]byte(pubPEM))
	if block == nil {
		t.Fatalf("transit/keys/%s: public key is not PEM", name)
	}
	transitPub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !transitPub.(interface{ Equal(crypto.PublicKey) bool }).Equal(rootCert.PublicKey) {
		t.Errorf("the root certificate's public key is not Transit key %s's", name)
	}

	m.ok("cluster", "add", "east")
	m.ok("cluster", "add", "west")
	eastDir := filepath.Join(t.TempDir(), "east")
	westDir := filepath.Join(t.TempDir(), "west")
	m.ok(issueArgs(keyFlags, "east", eastDir)...)
	m.ok(issueArgs(keyFlags, "west", westDir)...)
	east := checkIntermediate(t, eastDir, "east", rootCert)
	west := checkIntermediate(t, westDir, "west", rootCert)
	assertClustersTalk(t, east, west)

	// The reference names the mount and the key; with the Vault connection
	// it is enough, without --key and without a disk passphrase.
	t.Run("issue without --key", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		if r := m.run(issueArgs(vaultFlags, "east", out)...); r.code != 0 {
			t.Errorf("issue with only the Vault connection failed: %s", r)
		}
		out = filepath.Join(t.TempDir(), "east-pass")
		if r := m.with("MESHROOT_PASSPHRASE=correct horse battery").run(issueArgs(vaultFlags, "east", out)...); r.code != 0 {
			t.Errorf("issue with only the Vault connection (a disk passphrase given) failed: %s", r)
		}
	})

	t.Run("sealed", func(t *testing.T) {
		v.Seal(t)
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(keyFlags, "east", out)...)
		v.Unseal(t)
		failedCleanly(t, r, 1, out, "Vault", "sealed")
		m.ok(issueArgs(keyFlags, "east", filepath.Join(t.TempDir(), "after-unseal"))...)
	})

	t.Run("token without the transit policy", func(t *testing.T) {
		// Only the default policy (a token made without policies would
		// inherit the root token's).
		f := vaultenv.WriteFile(t, "token", v.Token(t, "default"))
		flags := []string{"--key", "vault-transit://transit", "--vault-addr", v.Addr, "--vault-token-file", f}
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(flags, "east", out)...)
		failedCleanly(t, r, 1, out, "Vault", "permission denied", "transit/keys/"+name)
	})

	t.Run("token that may read but not sign", func(t *testing.T) {
		v.PutPolicy(t, "transit-read", `path "transit/keys/*" { capabilities = ["read"] }`)
		f := vaultenv.WriteFile(t, "token", v.Token(t, "transit-read"))
		flags := []string{"--key", "vault-transit://transit", "--vault-addr", v.Addr, "--vault-token-file", f}
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(flags, "east", out)...)
		failedCleanly(t, r, 1, out, "Vault", "permission denied", "transit/sign/"+name)
	})

	t.Run("approle", func(t *testing.T) {
		roleID, secretID := v.AppRole(t, "meshroot", "meshroot-transit")
		f := vaultenv.WriteFile(t, "secret-id", secretID)
		flags := []string{"--key", "vault-transit://transit", "--vault-addr", v.Addr,
			"--vault-auth", "approle", "--vault-role-id", roleID, "--vault-secret-id-file", f}
		out := filepath.Join(t.TempDir(), "east")
		m.ok(issueArgs(flags, "east", out)...)
		checkIntermediate(t, out, "east", rootCert)
	})
}

// ---------------------------------------------------------------------------
// Vault PKI as the signing authority

func TestRootInVaultPKI(t *testing.T) {
	requireOpenSSL(t)
	v := vaultenv.Start(t)
	vaultRoot := v.EnablePKI(t, "pki")
	tokenFile := vaultenv.WriteFile(t, "token", v.RootToken)
	vaultFlags := []string{"--vault-addr", v.Addr, "--vault-token-file", tokenFile}
	m := newMeshroot(t)

	m.ok(append(vaultFlags, "root", "init", "--trust-domain", trustDomain, "--upstream", "vault-pki://pki")...)
	root := oneActiveRoot(t, m)
	if root.KeyRef != "vault-pki://pki" {
		t.Errorf("key_ref %q, want vault-pki://pki", root.KeyRef)
	}
	if got := bundleRoot(t, m); !got.Equal(vaultRoot) {
		t.Fatalf("the trust bundle holds %q, not Vault's root", got.Subject)
	}

	m.ok("cluster", "add", "east")
	m.ok("cluster", "add", "west")
	issueFlags := append([]string{noDiskPassphrase}, vaultFlags...)
	eastDir := filepath.Join(t.TempDir(), "east")
	westDir := filepath.Join(t.TempDir(), "west")
	m.ok(issueArgs(issueFlags, "east", eastDir)...)
	m.ok(issueArgs(issueFlags, "west", westDir)...)
	var clusters []*cacerts
	for _, c := range []struct{ name, dir string }{{"east", eastDir}, {"west", westDir}} {
		cc := checkIntermediate(t, c.dir, c.name, vaultRoot)
		if err := cc.cert.CheckSignatureFrom(vaultRoot); err != nil {
			t.Errorf("%s: intermediate is not signed by Vault's root: %v", c.name, err)
		}
		if len(cc.chain) != 2 {
			t.Errorf("%s: cert-chain.pem holds %d certificates, want [intermediate, Vault root]", c.name, len(cc.chain))
		}
		clusters = append(clusters, cc)
	}
	assertClustersTalk(t, clusters[0], clusters[1])
	assertNoPrivateKey(t, m.dataDir)

	// Nothing of an upstream root is on disk: issuing must not ask for a
	// disk passphrase.
	t.Run("issue needs no disk passphrase", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		if r := m.run(issueArgs(vaultFlags, "east", out)...); r.code != 0 {
			t.Errorf("issue under a vault-pki upstream without a disk passphrase failed: %s", r)
		}
	})

	t.Run("named issuer", func(t *testing.T) {
		second := v.GenerateRoot(t, "pki", "root-2", "meshroot second test root")
		m2 := newMeshroot(t)
		m2.ok(append(vaultFlags, "root", "init", "--trust-domain", trustDomain, "--upstream", "vault-pki://pki?issuer=root-2")...)
		m2.ok("cluster", "add", "east")
		out := filepath.Join(t.TempDir(), "east")
		m2.ok(issueArgs(issueFlags, "east", out)...)
		c := checkIntermediate(t, out, "east", second)
		if err := c.cert.CheckSignatureFrom(second); err != nil {
			t.Errorf("intermediate is not signed by issuer root-2: %v", err)
		}
	})

	// Through the server: its own TLS certificate comes from a pathlen-0
	// CA that Vault signs, and the admin API issues.
	dir := t.TempDir()
	serveArgs := append([]string{"--data-dir", m.dataDir, "--san", "127.0.0.1", noDiskPassphrase}, vaultFlags...)
	srv := startServe(t, dir, serveArgs...)
	srv.waitReady(t)
	checkServerCert(t, srv.issuerAddr, vaultRoot)

	ms := *m
	ms.socket = srv.socket
	out := filepath.Join(t.TempDir(), "east-via-server")
	ms.ok("intermediate", "issue", "--cluster", "east", "--out", out)
	c := checkIntermediate(t, out, "east", vaultRoot)
	if err := c.cert.CheckSignatureFrom(vaultRoot); err != nil {
		t.Errorf("intermediate issued through the server is not signed by Vault's root: %v", err)
	}
	srv.stop(t)

	t.Run("serve needs no disk passphrase", func(t *testing.T) {
		args := append([]string{"--data-dir", m.dataDir, "--san", "127.0.0.1"}, vaultFlags...)
		s := startServe(t, t.TempDir(), args...)
		s.waitReady(t)
		s.stop(t)
	})
}

// checkServerCert connects to the Issuer API and checks its certificate:
// a leaf for 127.0.0.1 under a pathlen-0 CA that Vault's root signed.
func checkServerCert(t *testing.T, addr string, vaultRoot *x509.Certificate) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) // verified below
	if err != nil {
		t.Fatalf("TLS to the Issuer API %s: %v", addr, err)
	}
	certs := conn.ConnectionState().PeerCertificates
	conn.Close()
	if len(certs) != 2 {
		t.Fatalf("the server sent %d certificates, want its leaf and the upstream-signed CA", len(certs))
	}
	leaf, ca := certs[0], certs[1]
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("the server's CA %q is not a pathlen-0 CA", ca.Subject)
	}
	if err := ca.CheckSignatureFrom(vaultRoot); err != nil {
		t.Errorf("the server's CA is not signed by Vault's root: %v", err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(vaultRoot)
	inters.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: "127.0.0.1",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("the server's certificate does not verify to Vault's root for 127.0.0.1: %v", err)
	}
	// What the agent checks: the CA is meshroot's server CA, not just any
	// pathlen-0 CA Vault signed (a cluster intermediate is one too).
	if err := meshrootca.VerifyServerChain(certs, roots, "127.0.0.1", time.Now()); err != nil {
		t.Errorf("the agent would refuse the server under Vault: %v", err)
	}
}

// ---------------------------------------------------------------------------
// The server when Vault goes away

func TestServeDegradedWhenVaultDown(t *testing.T) {
	requireOpenSSL(t)
	v := vaultenv.StartPersistent(t)
	v.EnableTransit(t, "transit")
	tokenFile := vaultenv.WriteFile(t, "token", v.RootToken)

	// The keys block of the server's config file, not flags.
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	cfg := writeFile(t, filepath.Join(dir, "meshroot.yaml"), []byte(`keys:
  create: vault-transit://transit
  vault:
    address: `+v.Addr+`
    tokenFile: `+tokenFile+`
`))
	s := startServe(t, dir, "--data-dir", dataDir, "--config", cfg, "--san", "127.0.0.1")
	m := newMeshroot(t)
	m.socket = s.socket

	m.ok("root", "init", "--trust-domain", trustDomain) // in the server's key manager: Transit
	s.waitReady(t)
	root := oneActiveRoot(t, m)
	if !strings.HasPrefix(root.KeyRef, "vault-transit://transit/") {
		t.Fatalf("key_ref %q: the server did not create the root key in Transit", root.KeyRef)
	}
	m.ok("cluster", "add", "east")
	rootCert := bundleRoot(t, m)
	bundlePEM := m.ok("bundle", "show").stdout
	first := filepath.Join(t.TempDir(), "east")
	m.ok("intermediate", "issue", "--cluster", "east", "--out", first)
	checkIntermediate(t, first, "east", rootCert)

	healthz := func() int {
		t.Helper()
		resp, err := http.Get("http://" + s.httpAddr + "/healthz")
		if err != nil {
			t.Fatalf("/healthz: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// degraded checks what must keep working while Vault is away, and
	// that issuance fails naming Vault (and every one of msgs).
	degraded := func(t *testing.T, msgs ...string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "east")
		r := m.run("intermediate", "issue", "--cluster", "east", "--out", out)
		failedCleanly(t, r, 1, out, append([]string{"Vault"}, msgs...)...)
		if code := healthz(); code != http.StatusOK {
			t.Errorf("/healthz answered %d while Vault is away, want 200", code)
		}
		if got := m.ok("bundle", "show").stdout; got != bundlePEM {
			t.Errorf("bundle show changed while Vault is away:\n%s", got)
		}
		if rows := auditList(t, m); len(rows) == 0 {
			t.Error("empty audit log")
		} else if last := rows[len(rows)-1]; last.Action != "intermediate.issue" || last.Result != "error" {
			t.Errorf("the failed issuance is audited as %s %s, want intermediate.issue error (Vault being away is not a policy refusal)", last.Action, last.Result)
		}
	}
	recovered := func(t *testing.T) {
		t.Helper()
		select {
		case err := <-s.exited:
			t.Fatalf("meshroot serve exited: %v", err)
		default:
		}
		out := filepath.Join(t.TempDir(), "east")
		m.ok("intermediate", "issue", "--cluster", "east", "--out", out)
		checkIntermediate(t, out, "east", rootCert)
	}

	t.Run("stopped", func(t *testing.T) {
		v.Stop(t)
		degraded(t)
		v.Restart(t) // same address and data, unsealed
		recovered(t)
	})

	t.Run("sealed", func(t *testing.T) {
		v.Seal(t)
		degraded(t, "sealed")
		v.Unseal(t)
		recovered(t)
	})

	if code := healthz(); code != http.StatusOK {
		t.Errorf("/healthz answered %d at the end, want 200", code)
	}
	s.stop(t)
}

// ---------------------------------------------------------------------------
// softkms (go.step.sm)

func TestRootInSoftKMS(t *testing.T) {
	requireOpenSSL(t)
	const pass = "correct horse battery staple"
	kmsDir := filepath.Join(t.TempDir(), "softkms")
	keyFlag := []string{"--key", "softkms:dir=" + kmsDir}
	base := newMeshroot(t)
	m := base.with("MESHROOT_PASSPHRASE=" + pass) // softkms encrypts its key files with it

	// Without a passphrase softkms refuses to write a plaintext key.
	fresh := newMeshroot(t)
	r := fresh.run(append(keyFlag, "root", "init", "--trust-domain", trustDomain)...)
	failedCleanly(t, r, 1, "", "softkms", "passphrase")

	m.ok(append(keyFlag, "root", "init", "--trust-domain", trustDomain)...)
	root := oneActiveRoot(t, m)
	keyPath, ok := strings.CutPrefix(root.KeyRef, "softkms:path=")
	if !ok || filepath.Dir(keyPath) != kmsDir {
		t.Fatalf("key_ref %q is not softkms:path=%s/...", root.KeyRef, kmsDir)
	}
	if mode := fileMode(t, keyPath); mode != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", keyPath, mode)
	}
	if b, err := os.ReadFile(keyPath); err != nil || !bytes.HasPrefix(b, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
		t.Errorf("%s is not an encrypted PKCS#8 key (%v)", keyPath, err)
	}
	assertNoPrivateKey(t, m.dataDir)

	m.ok("cluster", "add", "east")
	m.ok("cluster", "add", "west")
	eastDir := filepath.Join(t.TempDir(), "east")
	westDir := filepath.Join(t.TempDir(), "west")
	m.ok(issueArgs(keyFlag, "east", eastDir)...)
	m.ok(issueArgs(keyFlag, "west", westDir)...)
	rootCert := bundleRoot(t, m)
	east := checkIntermediate(t, eastDir, "east", rootCert)
	west := checkIntermediate(t, westDir, "west", rootCert)
	assertClustersTalk(t, east, west)

	t.Run("issue by key reference alone", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		if r := m.run(issueArgs(nil, "east", out)...); r.code != 0 {
			t.Errorf("issue without --key failed: %s", r)
		}
	})

	t.Run("wrong passphrase", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "east")
		r := base.with("MESHROOT_PASSPHRASE=not the passphrase").run(issueArgs(keyFlag, "east", out)...)
		failedCleanly(t, r, 1, out, "softkms", "passphrase")
	})
}
