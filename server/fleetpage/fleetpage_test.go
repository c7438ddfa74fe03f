package fleetpage_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server/fleetpage"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// fleet builds a real authority with three clusters: "healthy" (a
// year-long intermediate, reported just now), "soon" (a five-day
// intermediate, reported), "silent" (registered, never heard from), and a
// root rotation whose activate step is blocked.
func fleet(t *testing.T) *ca.Service {
	t.Helper()
	ctx := ca.WithActor(context.Background(), "test")
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{MinTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	seq, err := st.BundleSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, ttl := range map[string]time.Duration{"healthy": 0, "soon": 5 * 24 * time.Hour, "silent": -1} {
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		if ttl < 0 {
			continue
		}
		key, err := keys.ECP256.Generate()
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
		if err != nil {
			t.Fatal(err)
		}
		iss, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: name, CSRData: der, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.ReportStatus(ctx, name, seq, ca.SerialHex(iss.Cert.SerialNumber)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	return svc
}

func newPage(t *testing.T, r fleetpage.Reader, opts ...func(*fleetpage.Options)) *fleetpage.Page {
	t.Helper()
	o := fleetpage.Options{Reader: r, Log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	p, err := fleetpage.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// get serves path from a loopback peer.
func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest("GET", "http://127.0.0.1:8080"+path, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Result(), string(body)
}

func TestFleetJSONStates(t *testing.T) {
	page := newPage(t, fleet(t))
	resp, body := get(t, page, fleetpage.PathJSON)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /fleet.json: %d %s", resp.StatusCode, body)
	}
	var f fleetpage.Fleet
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatal(err)
	}
	if f.TrustDomain != "example.org" {
		t.Errorf("trust domain %q", f.TrustDomain)
	}
	want := map[string]string{"healthy": fleetpage.StateHealthy, "soon": fleetpage.StateExpiringCrit, "silent": fleetpage.StateNotSeen}
	if len(f.Clusters) != len(want) {
		t.Fatalf("clusters: %+v", f.Clusters)
	}
	for _, c := range f.Clusters {
		if c.State != want[c.Name] {
			t.Errorf("cluster %s: state %q, want %q (states %v)", c.Name, c.State, want[c.Name], c.States)
		}
		if c.Istiod != "unknown" || c.Quarantined {
			t.Errorf("cluster %s: istiod %q quarantined %v", c.Name, c.Istiod, c.Quarantined)
		}
		switch c.Name {
		case "soon":
			if c.DaysLeft == nil || *c.DaysLeft != 4 || c.IntermediateSource != "reported" || c.RenewAt.IsZero() {
				t.Errorf("soon: days left %v, source %q, renew %v", c.DaysLeft, c.IntermediateSource, c.RenewAt)
			}
		case "silent":
			if c.IntermediateSerial != "" || c.SinceContact != "never" || c.DaysLeft != nil {
				t.Errorf("silent: %+v", c)
			}
		}
	}
	if !f.Rotation.InProgress || f.Rotation.NextPhase != "activate" || len(f.Rotation.Blockers) != 3 {
		t.Fatalf("rotation: %+v", f.Rotation)
	}
	for _, b := range f.Rotation.Blockers {
		// The words of the CLI's gate (ca's planActivate).
		if !strings.Contains(b.Reason, "has applied trust bundle") {
			t.Errorf("blocker %+v", b)
		}
	}
	if len(f.Roots) != 2 {
		t.Errorf("roots: %+v", f.Roots)
	}
	var roots, inters int
	for _, it := range f.Calendar.Items {
		switch it.Kind {
		case "root":
			roots++
			if it.WarnAt != it.End.Add(-fleetpage.RootWarn) || !it.CritAt.IsZero() {
				t.Errorf("root item thresholds: %+v", it)
			}
		case "intermediate":
			inters++
			if it.WarnAt != it.End.Add(-fleetpage.IntermediateWarn) || it.CritAt != it.End.Add(-fleetpage.IntermediateCrit) {
				t.Errorf("intermediate item thresholds: %+v", it)
			}
			life := it.End.Sub(it.Start)
			if got := it.RenewAt.Sub(it.Start); got < life*2/3-time.Second || got > life*2/3+time.Second {
				t.Errorf("%s: renewal %v into a %v lifetime, want 2/3", it.Label, got, life)
			}
		}
	}
	if roots != 2 || inters != 2 {
		t.Errorf("calendar: %d roots, %d intermediates", roots, inters)
	}
	if !f.Audit.Verified || f.Audit.Entries == 0 || len(f.Audit.Tail) == 0 || len(f.Audit.Tail) > 20 {
		t.Errorf("audit: verified %v, %d entries, tail %d", f.Audit.Verified, f.Audit.Entries, len(f.Audit.Tail))
	}
	if f.Audit.Tail[0].Action != "root.prepare" {
		t.Errorf("audit tail starts with %q, want the newest (root.prepare)", f.Audit.Tail[0].Action)
	}
}

func TestFleetAuditTailIsTheNewest(t *testing.T) {
	svc := fleet(t)
	page := newPage(t, svc, func(o *fleetpage.Options) { o.AuditTail = 3 })
	_, body := get(t, page, fleetpage.PathJSON)
	var f fleetpage.Fleet
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatal(err)
	}
	all, err := svc.ListAudit(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Audit.Tail) != 3 || f.Audit.Tail[0].Seq != all[len(all)-1].Seq || f.Audit.Tail[2].Seq != all[len(all)-3].Seq {
		t.Fatalf("tail %+v, log ends at %d", f.Audit.Tail, all[len(all)-1].Seq)
	}
}

func TestFleetPageHTML(t *testing.T) {
	page := newPage(t, fleet(t))
	resp, body := get(t, page, fleetpage.PathPage)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /fleet: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, s := range []string{
		`data-cluster="healthy" data-state="healthy"`, `data-cluster="soon" data-state="expiring (&lt; 7 days)"`,
		`data-cluster="silent" data-state="not seen"`, `id="expiry-calendar"`, `class="zone crit threshold" data-days="7"`,
		`class="zone warn threshold" data-days="30"`, "meshroot root activate", "has applied trust bundle",
		"hash chain verified", `href="/fleet/fleet.css"`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %s", s)
		}
	}
	for _, s := range []string{"<script", "http://", "https://"} {
		if strings.Contains(body, s) {
			t.Errorf("page contains %q: nothing may be fetched from elsewhere", s)
		}
	}
	resp, css := get(t, page, "/fleet/fleet.css")
	if resp.StatusCode != 200 || !strings.Contains(css, "#expiry-calendar") {
		t.Errorf("stylesheet: %d", resp.StatusCode)
	}
}

func TestFleetPageRefusesNonLoopbackPeers(t *testing.T) {
	page := newPage(t, fleet(t))
	for _, tc := range []struct {
		remote, host string
		code         int
	}{
		{"192.0.2.7:5000", "127.0.0.1:8080", http.StatusForbidden},
		{"[2001:db8::1]:5000", "[::1]:8080", http.StatusForbidden},
		{"127.0.0.1:5000", "attacker.example:8080", http.StatusMisdirectedRequest}, // DNS rebinding
		{"127.0.0.1:5000", "localhost:8080", http.StatusOK},
		{"[::1]:5000", "[::1]:8080", http.StatusOK},
	} {
		req := httptest.NewRequest("GET", "/fleet.json", nil)
		req.RemoteAddr, req.Host = tc.remote, tc.host
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("peer %s host %s: %d, want %d", tc.remote, tc.host, rec.Code, tc.code)
		}
	}
}

func TestFleetPageAuthorizeHook(t *testing.T) {
	var called bool
	page := newPage(t, fleet(t), func(o *fleetpage.Options) {
		o.Authorize = func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				if r.Header.Get("X-Test-Role") != "viewer" {
					http.Error(w, "no", http.StatusUnauthorized)
					return
				}
				h.ServeHTTP(w, r)
			})
		}
	})
	req := httptest.NewRequest("GET", "/fleet.json", nil) // remote peer: the hook decides, not the loopback guard
	rec := httptest.NewRecorder()
	page.ServeHTTP(rec, req)
	if !called || rec.Code != http.StatusUnauthorized {
		t.Fatalf("hook called %v, code %d", called, rec.Code)
	}
	req.Header.Set("X-Test-Role", "viewer")
	rec = httptest.NewRecorder()
	page.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("authorized: %d", rec.Code)
	}
}

// Guarded serves the same routes behind another guard (the server's admin
// mTLS check) and leaves the page's own guard in place on ServeHTTP.
func TestFleetPageGuarded(t *testing.T) {
	page := newPage(t, fleet(t))
	var seen []string
	h := page.Guarded(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, r.URL.Path)
			if r.Header.Get("X-Test-Role") != "viewer" {
				http.Error(w, "no", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	for _, path := range []string{"/fleet", "/fleet.json", "/fleet/fleet.css"} {
		req := httptest.NewRequest("GET", "https://meshroot.example:9444"+path, nil)
		req.RemoteAddr = "192.0.2.7:4242" // off loopback: the guard decides
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), "east") {
			t.Errorf("GET %s without the role: %d %q", path, rec.Code, rec.Body.String())
		}
		req.Header.Set("X-Test-Role", "viewer")
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s with the role: %d, CSP %q", path, rec.Code, rec.Header().Get("Content-Security-Policy"))
		}
		// The same request through ServeHTTP still meets LoopbackOnly.
		rec = httptest.NewRecorder()
		page.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("ServeHTTP %s from 192.0.2.7: %d, want 403 (loopback only)", path, rec.Code)
		}
	}
	if len(seen) != 6 {
		t.Errorf("the guard saw %d requests, want 6", len(seen))
	}
}

func TestCheckListener(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:0": true, "[::1]:8080": true, "127.0.0.2:1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "192.0.2.1:8080": false, "meshroot.example:8080": false,
	} {
		err := fleetpage.CheckListener(addr)
		if (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
		if err != nil && !strings.Contains(err.Error(), "remote access needs admin mTLS") {
			t.Errorf("%s: message %q", addr, err)
		}
	}
}

func TestFleetEmpty(t *testing.T) {
	// A fresh data dir: no root, no cluster. The page still renders.
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	km, _ := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, newPage(t, svc), fleetpage.PathPage)
	if resp.StatusCode != 200 || !strings.Contains(body, "No cluster registered yet") || !strings.Contains(body, "No root yet") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// The page's clock moves the states on: six days later "soon" has expired
// and nobody has been heard from for more than an hour.
func TestFleetStatesFollowTheClock(t *testing.T) {
	later := time.Now().Add(6 * 24 * time.Hour)
	page := newPage(t, fleet(t), func(o *fleetpage.Options) { o.Now = func() time.Time { return later } })
	_, body := get(t, page, fleetpage.PathJSON)
	var f fleetpage.Fleet
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"healthy": {fleetpage.StateNotSeen},
		"soon":    {fleetpage.StateExpired, fleetpage.StateNotSeen},
		"silent":  {fleetpage.StateNotSeen, fleetpage.StateNoIntermediate},
	}
	for _, c := range f.Clusters {
		if strings.Join(c.States, ",") != strings.Join(want[c.Name], ",") {
			t.Errorf("%s: states %v, want %v", c.Name, c.States, want[c.Name])
		}
		if c.Name == "soon" && (c.Level != "crit" || c.DaysLeft == nil || *c.DaysLeft >= 0) {
			t.Errorf("soon: level %s, days left %v", c.Level, c.DaysLeft)
		}
	}
}

// A federation peer that was never fetched is shown as such, with its
// bootstrap bundle held.
func TestFleetFederationPeer(t *testing.T) {
	svc := fleet(t)
	other, err := keys.ECP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.NewRoot(other, ca.RootOptions{TrustDomain: "peer.example"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ca.WithActor(t.Context(), "test")
	if _, err := svc.AddFederation(ctx, ca.AddFederationRequest{
		TrustDomain: "peer.example", URL: "https://peer.example/bundle", Profile: store.ProfileHTTPSWeb,
		BootstrapBundle: ca.EncodeCerts([]*x509.Certificate{root}),
	}); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, newPage(t, svc), fleetpage.PathJSON)
	var f fleetpage.Fleet
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Federation) != 1 || f.Federation[0].TrustDomain != "peer.example" || f.Federation[0].Health != "bootstrap bundle, not fetched yet" || f.Federation[0].Level != "warn" {
		t.Fatalf("federation: %+v", f.Federation)
	}
	_, html := get(t, newPage(t, svc), fleetpage.PathPage)
	if !strings.Contains(html, `data-peer="peer.example"`) {
		t.Error("the page does not list the peer")
	}
}

// TestFleetShowsQuarantineEnforcement: a quarantined cluster's row says
// so, with how many of the others applied the CRLs that list it (none
// here: no agent wrote a ca-crl.pem) and which are pending.
func TestFleetShowsQuarantineEnforcement(t *testing.T) {
	svc := fleet(t)
	if _, err := svc.QuarantineCluster(ca.WithActor(t.Context(), "test"), ca.QuarantineRequest{Cluster: "soon", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	page := newPage(t, svc)
	_, body := get(t, page, fleetpage.PathJSON)
	var f fleetpage.Fleet
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.Clusters {
		switch {
		case c.Name == "soon" && (!c.Quarantined || c.Enforcement != "applied by 0 of 2; pending: healthy, silent"):
			t.Errorf("soon: quarantined %v, enforcement %q", c.Quarantined, c.Enforcement)
		case c.Name != "soon" && (c.Quarantined || c.Enforcement != ""):
			t.Errorf("%s: quarantined %v, enforcement %q", c.Name, c.Quarantined, c.Enforcement)
		}
	}
	if _, html := get(t, page, fleetpage.PathPage); !strings.Contains(html, "yes: applied by 0 of 2; pending: healthy, silent") {
		t.Error("the page does not show soon's quarantine enforcement")
	}
}
