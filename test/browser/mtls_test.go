package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestFleetPageOverAdminMTLS serves the fleet page the way other hosts
// reach it: `serve --dev --admin-listen --fleet-page-listen`, on 127.0.0.1
// but without the loopback shortcut (admin mTLS on every request, as off
// loopback). Chromium, holding no admin client certificate, is refused and
// sees no fleet data; the refusal is logged. A Go HTTPS client with a
// viewer or an operator certificate from `meshroot admin cert issue` reads
// the page; one with a certificate of a foreign CA is refused at the
// handshake, and one whose certificate was revoked gets 403.
func TestFleetPageOverAdminMTLS(t *testing.T) {
	chromium := requireChromium(t)
	dir := shortDir(t)
	s := startDev(t, dir, "--admin-listen", "127.0.0.1:0", "--fleet-page-listen", "127.0.0.1:0")
	sock := "--socket=" + s.socket
	if !strings.HasPrefix(s.fleetURL, "https://127.0.0.1:") {
		t.Fatalf("the banner's fleet page is %s; want https on 127.0.0.1", s.fleetURL)
	}
	if strings.Contains(s.fleetURL, s.issuer) {
		t.Fatalf("the fleet page %s is on the Issuer's port", s.fleetURL)
	}
	// cluster "dev" reports in, so that the page has something to leak.
	args := append([]string{}, s.agentArgs...)
	args[len(args)-1] = filepath.Join(dir, "dev-cacerts")
	cliOK(t, append(args, "--once")...)

	// Chromium without a client certificate. The server's certificate is
	// not what is tested here (its CA is not in Chromium's store), so
	// Chromium ignores certificate errors: only the missing client
	// certificate can refuse it.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1366, 768),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, u := range []string{s.fleetURL, s.fleetURL + ".json"} {
		_, navErr := chromedp.Run(ctx, chromedp.Navigate(u))
		var body string
		if v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)); err == nil {
			body = v
		}
		if navErr == nil || !strings.Contains(navErr.Error(), "net::ERR_") {
			t.Errorf("Chromium without a client certificate loaded %s: error %v, body %q", u, navErr, body)
		}
		if strings.Contains(body, "dev") && strings.Contains(body, "cluster") {
			t.Errorf("Chromium without a client certificate sees fleet data at %s: %q", u, body)
		}
	}
	testWait(t, 10*time.Second, "the refused handshakes logged by the fleet page", func() bool {
		return strings.Contains(s.logText(), "TLS handshake error") && strings.Contains(s.logText(), `"component":"fleet-page"`)
	})

	// Go clients with admin certificates of each role read the page.
	viewer := issueAdminCert(t, sock, filepath.Join(dir, "vera"), "vera", "viewer")
	operator := issueAdminCert(t, sock, filepath.Join(dir, "otto"), "otto", "operator")
	for name, c := range map[string]*http.Client{"viewer": viewer.client, "operator": operator.client} {
		for path, want := range map[string]string{"": `data-cluster="dev"`, ".json": `"name": "dev"`} {
			code, body, err := httpGet(c, s.fleetURL+path)
			if err != nil || code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("%s GET %s%s: %d, %v, body without %q", name, s.fleetURL, path, code, err, want)
			}
		}
	}

	// An operator certificate of a foreign CA: refused at the handshake.
	foreign := foreignAdminCert(t)
	fc := adminClient(viewer.roots, &foreign, tls.VersionTLS12)
	if code, body, err := httpGet(fc, s.fleetURL); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("a certificate of a foreign CA: %d %q, %v; want the handshake refused (unknown certificate authority)", code, body, err)
	}
	// No certificate at all, from Go: refused at the handshake too.
	if code, body, err := httpGet(adminClient(viewer.roots, nil, tls.VersionTLS12), s.fleetURL); err == nil {
		t.Errorf("no client certificate: %d %q; want the handshake refused", code, body)
	}

	// A revoked admin certificate: accepted at the handshake (it chains to
	// the admin CA), refused on the request, audited.
	rita := issueAdminCert(t, sock, filepath.Join(dir, "rita"), "rita", "viewer")
	if code, _, err := httpGet(rita.client, s.fleetURL); err != nil || code != http.StatusOK {
		t.Fatalf("rita before revocation: %d, %v", code, err)
	}
	cliOK(t, "admin", "cert", "revoke", rita.serial, sock)
	rc := adminClient(rita.roots, &rita.cert, 0) // a fresh connection
	code, body, err := httpGet(rc, s.fleetURL)
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, "revoked") || strings.Contains(body, `data-cluster`) {
		t.Errorf("rita after revocation: %d %q, %v; want 403 naming the revocation", code, body, err)
	}
	audit := cliOK(t, "audit", "list", sock)
	if !strings.Contains(audit, "admin-cert:rita(") || !strings.Contains(audit, "fleet page") {
		t.Errorf("the refusal of rita's revoked certificate is not audited:\n%s", audit)
	}
}

// adminCreds is an admin credentials folder loaded for a Go client.
type adminCreds struct {
	cert   tls.Certificate
	roots  *x509.CertPool
	serial string
	client *http.Client
}

// issueAdminCert has the admin socket issue NAME's certificate into dir.
func issueAdminCert(t *testing.T, sock, dir, name, role string) adminCreds {
	t.Helper()
	out := cliOK(t, "admin", "cert", "issue", name, "--role", role, "--ttl", "1h", "--out", dir, "-o", "json", sock)
	var issued struct {
		Serial string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.Serial == "" {
		t.Fatalf("admin cert issue -o json: %v\n%s", err, out)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "trust-bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("trust-bundle.pem holds no certificate")
	}
	c := adminCreds{cert: cert, roots: roots, serial: issued.Serial}
	c.client = adminClient(roots, &c.cert, 0)
	return c
}

// adminClient is an HTTPS client that verifies the server against roots
// and presents cert (none when nil) whatever the server asks for. Under
// TLS 1.2 (maxVersion) a refused client certificate ends the handshake
// with the server's alert.
func adminClient(roots *x509.CertPool, cert *tls.Certificate, maxVersion uint16) *http.Client {
	cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MaxVersion: maxVersion}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

func httpGet(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), nil
}

// foreignAdminCert is an operator client certificate laid out like an
// admin certificate, from a CA that is not the server's admin CA.
func foreignAdminCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshroot admin CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "mallory", OrganizationalUnit: []string{"operator"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// testWait polls cond until it holds or timeout passes.
func testWait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
