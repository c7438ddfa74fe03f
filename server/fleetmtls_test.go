package server_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/server/fleetpage"
	"github.com/meshroot/meshroot/store/sqlite"
)

// startFleetMTLS is a remote admin server that serves the fleet page over
// admin mTLS on its own listener (127.0.0.1, and no loopback shortcut:
// the page is authorized as it would be off loopback).
func startFleetMTLS(t *testing.T, log *logBuffer) *remoteAdminServer {
	t.Helper()
	return startRemoteAdmin(t, func(c *server.ServerConfig) {
		page, err := fleetpage.New(fleetpage.Options{Reader: c.Service, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		c.FleetPage, c.FleetPageListen = page, "127.0.0.1:0"
		c.Log = slog.New(slog.NewTextHandler(log, nil))
	})
}

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fleetClient is an HTTPS client of the page that pins the trust domain's
// roots and presents cert (none when nil) whatever the server asks for.
func (rs *remoteAdminServer) fleetClient(cert *tls.Certificate) *http.Client {
	return rs.fleetClientTLS(cert, 0)
}

// fleetClientTLS is fleetClient with a highest TLS version (0: TLS 1.3).
// Under TLS 1.2 the server judges the client certificate before the
// handshake ends, so that its refusal reaches the client as an alert
// rather than racing with the client's first write.
func (rs *remoteAdminServer) fleetClientTLS(cert *tls.Certificate, maxVersion uint16) *http.Client {
	pool := x509.NewCertPool()
	for _, r := range rs.roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: maxVersion}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// get fetches path from the page over admin mTLS.
func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestFleetPageOverAdminMTLS: with fleetPageListen the page is served only
// over HTTPS to holders of an admin certificate of either role, checked on
// every request; a client without one, with one of another CA, or with an
// expired one fails the handshake, and a revoked one is refused (403) from
// its next request on, audited.
func TestFleetPageOverAdminMTLS(t *testing.T) {
	var log logBuffer
	rs := startFleetMTLS(t, &log)
	ctx := t.Context()
	base := "https://" + rs.srv.FleetPageAddr()
	if rs.srv.FleetPageAddr() == "" {
		t.Fatal("FleetPageAddr is empty with FleetPageListen set")
	}

	// Not on the plain HTTP listener any more.
	if resp, err := http.Get("http://" + rs.srv.HTTPAddr() + "/fleet"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /fleet on the HTTP listener = %v, %v; want 404: the page is served over admin mTLS only", resp, err)
	} else {
		resp.Body.Close()
	}

	vera, _ := rs.issue(t, "vera", "viewer", time.Hour)
	otto, _ := rs.issue(t, "otto", "operator", time.Hour)
	for name, cert := range map[string]*tls.Certificate{"viewer": vera, "operator": otto} {
		c := rs.fleetClient(cert)
		for path, want := range map[string]string{"/fleet": `data-cluster="east"`, "/fleet.json": `"name": "west"`, "/fleet/fleet.css": "#expiry-calendar"} {
			code, body, err := get(t, c, base+path)
			if err != nil || code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("%s GET %s: %d, %v, body without %q", name, path, code, err, want)
			}
		}
	}

	refused := func(name string, cert *tls.Certificate, alert string) {
		t.Helper()
		code, body, err := get(t, rs.fleetClientTLS(cert, tls.VersionTLS12), base+"/fleet")
		if err == nil || !strings.Contains(err.Error(), alert) {
			t.Errorf("%s: %d %q, error %v; want the handshake refused with %q", name, code, body, err, alert)
		}
		// And under TLS 1.3, where the client learns of it later: refused all the same.
		if code, body, err := get(t, rs.fleetClient(cert), base+"/fleet"); err == nil {
			t.Errorf("%s over TLS 1.3: %d %q; want no answer", name, code, body)
		}
	}
	refused("no client certificate", nil, "handshake failure")

	// An operator certificate of another CA (same subject layout).
	other := testca.New(t, "other.example")
	key := testca.Key(t)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: testca.Serial(), Subject: pkix.Name{CommonName: "mallory", OrganizationalUnit: []string{"operator"}, Organization: []string{ca.AdminCertOrganization}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, other.Cert, key.Public(), other.Key)
	if err != nil {
		t.Fatal(err)
	}
	refused("operator certificate of a foreign CA", &tls.Certificate{Certificate: [][]byte{der, other.Cert.Raw}, PrivateKey: key}, "unknown certificate authority")

	// A cluster intermediate: it chains to the trust domain, not the admin CA.
	req, ikey := csr(t)
	resp, err := rs.admin.IssueIntermediate(ctx, &meshrootv1.IssueIntermediateRequest{Cluster: "east", Csr: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	refused("cluster intermediate", &tls.Certificate{Certificate: resp.GetCertChain(), PrivateKey: ikey.PrivateKey}, "unknown certificate authority")

	// An admin certificate that has expired.
	past := rs.open(func() time.Time { return time.Now().Add(-10 * time.Hour) })
	req, okey := csr(t)
	old, err := past.IssueAdminCert(ca.WithActor(ctx, "test"), ca.AdminCertRequest{Name: "olga", Role: ca.RoleViewer, TTL: time.Hour, CSR: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	refused("expired admin certificate", tlsCert(t, ca.EncodeCerts(old.Chain), okey), "expired certificate")

	testca.WaitFor(t, 5*time.Second, "8 refused handshakes logged", func() bool {
		return strings.Count(log.String(), "TLS handshake error") >= 8
	})

	// A revoked one: served, revoked, then refused on the same connection
	// (the check is per request, not per handshake) and audited.
	rita, rec := rs.issue(t, "rita", "viewer", time.Hour)
	c := rs.fleetClient(rita)
	if code, _, err := get(t, c, base+"/fleet"); err != nil || code != http.StatusOK {
		t.Fatalf("rita before revocation: %d, %v", code, err)
	}
	if _, err := rs.admin.RevokeAdminCert(ctx, &meshrootv1.RevokeAdminCertRequest{Serial: rec.GetSerial()}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/fleet", "/fleet.json"} {
		code, body, err := get(t, c, base+path)
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "revoked") || strings.Contains(body, "east") {
			t.Errorf("rita after revocation GET %s: %d %q, %v; want 403 naming the revocation", path, code, body, err)
		}
	}
	actor, action, result := lastAuditActor(t, rs)
	if !strings.HasPrefix(actor, "admin-cert:rita(") || action != "admin.remote" || result != "denied" {
		t.Errorf("refusal audited as %s %s %s; want admin-cert:rita(...) admin.remote denied", actor, action, result)
	}
	if !strings.Contains(log.String(), "fleet page refused") {
		t.Errorf("the refusal of rita is not logged:\n%s", log.String())
	}
	es, err := rs.admin.ListAudit(ctx, &meshrootv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if last := es.GetEntries()[len(es.GetEntries())-1]; last.GetTarget() != "fleet page" {
		t.Errorf("the refusal's audit row does not name the fleet page: %v", last)
	}
}

// TestFleetPageListenNeedsAdminListen: the page over admin mTLS without
// the remote admin listener is a configuration error, not a page without
// credentials.
func TestFleetPageListenNeedsAdminListen(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	page, err := fleetpage.New(fleetpage.Options{Reader: svc})
	if err != nil {
		t.Fatal(err)
	}
	_, err = server.NewServer(server.ServerConfig{
		Service: svc, Store: st, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", AdminSocket: filepath.Join(dir, "a.sock"),
		FleetPage: page, FleetPageListen: "127.0.0.1:0", Log: slog.New(slog.DiscardHandler),
	})
	if err == nil || !strings.Contains(err.Error(), "set adminListen") {
		t.Errorf("NewServer with fleetPageListen and no adminListen: %v", err)
	}
}
