// Package stepcaenv runs a real smallstep step-ca for meshroot's tests and
// benchmarks, set up without the step CLI: it writes the root and issuing
// intermediate certificates and keys, the JWK provisioners (public key in
// ca.json, private key as a PEM file) and ca.json itself, then starts the
// step-ca binary on 127.0.0.1.
//
// The binary comes from test/tools/build.sh, which builds step-ca v0.30.2
// once per machine into ~/.cache/meshroot-test/bin/step-ca-v0.30.2 (about
// 3-4 CPU-minutes cold: docs/performance.md). MESHROOT_STEPCA_BIN
// overrides it.
//
// Provisioners (all JWK, lifetimes up to 9000h):
//   - Intermediate: its template makes a pathlen-0 CA for the CSR's key,
//     named after the token's subject, with a critical URI name constraint
//     to the host of a spiffe:// SAN when the token carries one
//     (IntermediateTemplate);
//   - Server: its template copies the CSR's subject and extensions into a
//     pathlen-0 CA, for meshroot's server CA (ServerTemplate);
//   - Leaf: step-ca's default template (a TLS leaf, not a CA);
//   - Unconstrained: a pathlen-0 CA template that ignores SANs, so never
//     writes the name constraint.
package stepcaenv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/meshroot/meshroot/test/toolscript"
)

// Version is the step-ca version the tools script builds.
const Version = "v0.30.2"

// Provisioner names.
const (
	Intermediate  = "meshroot"
	Server        = "meshroot-server"
	Leaf          = "leaf"
	Unconstrained = "unconstrained"
)

// IntermediateTemplate is the X.509 template of the Intermediate
// provisioner (docs/keys.md shows the same): a CA with path length 0 for
// the CSR's key, its common name the token's subject, no SANs, and, when
// the token carries a spiffe://TRUST-DOMAIN SAN, a critical name
// constraint permitting that trust domain and excluding its subdomains.
const IntermediateTemplate = `{
	"subject": {"commonName": {{ toJson .Subject.CommonName }}},
{{- range .SANs }}{{ if eq .Type "uri" }}
	"nameConstraints": {"critical": true,
		"permittedURIDomains": [{{ toJson (urlParse .Value).host }}],
		"excludedURIDomains": [{{ toJson (printf ".%s" (urlParse .Value).host) }}]},
{{- end }}{{ end }}
	"keyUsage": ["certSign", "crlSign", "digitalSignature"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

// ServerTemplate is the X.509 template of the Server provisioner
// (upstream/stepca.ServerTemplate and docs/keys.md show the same): a CA
// with path length 0 carrying the CSR's subject and extensions.
const ServerTemplate = `{
	"subject": {{ toJson .Insecure.CR.Subject }},
	"extensions": {{ toJson .Insecure.CR.Extensions }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

const unconstrainedTemplate = `{
	"subject": {"commonName": {{ toJson .Subject.CommonName }}},
	"keyUsage": ["certSign", "crlSign", "digitalSignature"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

// KeyPassword encrypts each provisioner's private key in ca.json
// ("encryptedKey", as `step ca init` stores it), for clients that fetch it
// from step-ca instead of reading a key file.
const KeyPassword = "stepcaenv provisioner password"

// Options shape the step-ca instance.
type Options struct {
	// IssuerPathLenZero gives step-ca's issuing intermediate path length
	// 0, as `step ca init` makes it (it then cannot sign CAs).
	IssuerPathLenZero bool
	// RootPathLenOne gives the root path length 1, as `step ca init` makes
	// it: with step-ca's intermediate below it, there is no room for a
	// cluster intermediate (by default the root has path length 2).
	RootPathLenOne bool
	// NoDB runs step-ca without its database (by default it keeps one,
	// badgerv2, as `step ca init` configures).
	NoDB bool
}

// CA is a running step-ca.
type CA struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// Addr is 127.0.0.1:PORT.
	Addr string
	// Fingerprint is the SHA-256 of the root certificate, hex.
	Fingerprint string
	// Root and Issuer are step-ca's root and its issuing intermediate.
	Root, Issuer *x509.Certificate
	// Dir holds ca.json, certificates, keys and the log.
	Dir string

	t       testing.TB
	bin     string
	logPath string
	keys    map[string]crypto.Signer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start sets up and starts a step-ca; it stops in t.Cleanup.
func Start(t testing.TB, opts Options) *CA {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	c := &CA{Dir: dir, t: t, bin: bin, logPath: filepath.Join(dir, "step-ca.log"), keys: map[string]crypto.Signer{}}
	c.Addr = freeAddr(t)
	c.URL = "https://" + c.Addr
	c.writeConfig(t, opts)
	c.start(t)
	t.Cleanup(c.Stop)
	return c
}

// ProvisionerKeyFile is the PEM file of a provisioner's private key.
func (c *CA) ProvisionerKeyFile(name string) string {
	return filepath.Join(c.Dir, "provisioner-"+name+".key")
}

// ProvisionerKey is a provisioner's private key.
func (c *CA) ProvisionerKey(name string) crypto.Signer { return c.keys[name] }

// Log returns what step-ca wrote so far.
func (c *CA) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Stop kills step-ca and waits for it to exit (idempotent).
func (c *CA) Stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// PID is step-ca's process id (0 when stopped).
func (c *CA) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *CA) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.bin, filepath.Join(c.Dir, "ca.json"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "STEPPATH="+c.Dir, "HOME="+c.Dir)
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("stepcaenv: start %s: %v", c.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("stepcaenv: step-ca exited at start:\n%s", c.Log())
		default:
		}
		resp, err := client.Get(c.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			c.Stop()
			t.Fatalf("stepcaenv: step-ca not healthy within 60 s (%v):\n%s", err, c.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeConfig writes the PKI, the provisioner keys and ca.json.
func (c *CA) writeConfig(t testing.TB, opts Options) {
	t.Helper()
	now := time.Now()
	rootKey, issKey := newKey(t), newKey(t)
	rootTmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"stepcaenv"}, CommonName: "stepcaenv Root CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 2,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if opts.RootPathLenOne {
		rootTmpl.MaxPathLen = 1
	}
	c.Root = createCert(t, rootTmpl, nil, rootKey, rootKey)
	issTmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"stepcaenv"}, CommonName: "stepcaenv Intermediate CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	if opts.IssuerPathLenZero {
		issTmpl.MaxPathLen, issTmpl.MaxPathLenZero = 0, true
	}
	c.Issuer = createCert(t, issTmpl, c.Root, issKey, rootKey)
	sum := sha256.Sum256(c.Root.Raw)
	c.Fingerprint = hex.EncodeToString(sum[:])
	writePEM(t, filepath.Join(c.Dir, "root_ca.crt"), "CERTIFICATE", c.Root.Raw)
	writePEM(t, filepath.Join(c.Dir, "intermediate_ca.crt"), "CERTIFICATE", c.Issuer.Raw)
	writePEM(t, filepath.Join(c.Dir, "intermediate_ca_key"), "PRIVATE KEY", pkcs8(t, issKey))
	templates := map[string]string{Intermediate: IntermediateTemplate, Server: ServerTemplate, Unconstrained: unconstrainedTemplate}
	var provs []map[string]any
	for _, name := range []string{Intermediate, Server, Leaf, Unconstrained} {
		key := newKey(t)
		c.keys[name] = key
		writePEM(t, c.ProvisionerKeyFile(name), "PRIVATE KEY", pkcs8(t, key))
		jwk := jose.JSONWebKey{Key: key.Public(), Algorithm: "ES256", Use: "sig"}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		jwk.KeyID = b64url(tp)
		p := map[string]any{
			"type": "JWK", "name": name, "key": jwk, "encryptedKey": encryptKey(t, key, jwk.KeyID),
			"claims": map[string]any{"maxTLSCertDuration": "9000h", "defaultTLSCertDuration": "24h", "minTLSCertDuration": "1m"},
		}
		if tmpl, ok := templates[name]; ok {
			f := filepath.Join(c.Dir, name+".tpl")
			if err := os.WriteFile(f, []byte(tmpl), 0o600); err != nil {
				t.Fatal(err)
			}
			p["options"] = map[string]any{"x509": map[string]any{"templateFile": f}}
		}
		provs = append(provs, p)
	}
	cfg := map[string]any{
		"root": filepath.Join(c.Dir, "root_ca.crt"), "federatedRoots": nil,
		"crt": filepath.Join(c.Dir, "intermediate_ca.crt"), "key": filepath.Join(c.Dir, "intermediate_ca_key"),
		"address": c.Addr, "insecureAddress": "", "dnsNames": []string{"127.0.0.1", "localhost"},
		"logger":    map[string]any{"format": "text"},
		"authority": map[string]any{"provisioners": provs},
		"tls": map[string]any{
			"cipherSuites": []string{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
			"minVersion":   1.2, "maxVersion": 1.3, "renegotiation": false,
		},
	}
	if !opts.NoDB {
		cfg["db"] = map[string]any{"type": "badgerv2", "dataSource": filepath.Join(c.Dir, "db")}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "ca.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// encryptKey seals the private JWK with KeyPassword (PBES2, compact JWE).
func encryptKey(t testing.TB, key *ecdsa.PrivateKey, kid string) string {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: "ES256", Use: "sig"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.PBES2_HS256_A128KW, Key: []byte(KeyPassword), PBES2Count: 10000},
		(&jose.EncrypterOptions{}).WithContentType("jwk+json"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pkcs8(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the step-ca binary, building it with test/tools/build.sh
// when it is missing (the script takes a lock and returns at once when the
// binary exists).
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = findBinary() })
	if binErr != nil {
		t.Fatalf("stepcaenv: %v", binErr)
	}
	return binPath
}

func findBinary() (string, error) {
	if p := os.Getenv("MESHROOT_STEPCA_BIN"); p != "" {
		return p, nil
	}
	script, err := toolscript.Path()
	if err != nil {
		return "", fmt.Errorf("%v (or set MESHROOT_STEPCA_BIN)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script, "step-ca")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s step-ca: %v\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	bin := filepath.Join(lines[len(lines)-1], "step-ca-"+Version, "step-ca")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s step-ca did not produce %s: %v", script, bin, err)
	}
	return bin, nil
}
