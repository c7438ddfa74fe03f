// Package fleetpage serves meshroot's read-only fleet view: every cluster
// with its intermediate and last contact, the root rotation and what
// blocks it, federation peers, the audit tail with its chain's
// verification, and an expiry calendar. It is rendered on the server from
// embedded templates and a stylesheet (nothing is fetched from elsewhere,
// no JavaScript), and the same data is served as JSON.
//
// It reads only through Reader, the read methods of ca.Admin, so it works
// over a ca.Service as well as over the admin API client.
package fleetpage

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

//go:embed templates/fleet.html static/fleet.css
var assets embed.FS

// Reader is what the page reads: the read half of ca.Admin.
type Reader interface {
	ListClusters(ctx context.Context) ([]store.Cluster, error)
	ShowCluster(ctx context.Context, name string) (ca.ClusterDetail, error)
	RotationStatus(ctx context.Context, workloadCertTTL time.Duration) (ca.RotationStatus, error)
	ListFederation(ctx context.Context) ([]store.FederationPeer, error)
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error)
	VerifyAudit(ctx context.Context) (entries int, err error)
}

var _ Reader = ca.Admin{}

// Paths the page serves.
const (
	PathPage  = "/fleet"
	PathJSON  = "/fleet.json"
	PathAsset = "/fleet/"
)

// Options configure the page.
type Options struct {
	Reader Reader
	// Now is the page's clock (time.Now).
	Now func() time.Time
	// WorkloadCertTTL is the retire gate's wait (ca.DefaultWorkloadCertTTL).
	WorkloadCertTTL time.Duration
	// AuditTail is how many audit entries to show (20).
	AuditTail int
	// RefreshSeconds makes the browser reload the page (15; negative: never).
	RefreshSeconds int
	// Authorize wraps every route of ServeHTTP: the place for an
	// authorization check. When nil, LoopbackOnly guards the page. A server
	// that serves the page over admin mTLS uses Guarded instead.
	Authorize func(http.Handler) http.Handler
	Log       *slog.Logger
}

// Page is the fleet page's HTTP handler.
type Page struct {
	opts    Options
	tmpl    *template.Template
	css     []byte
	handler http.Handler
	// routes is the page without its guard.
	routes http.Handler
}

// New checks opts and parses the embedded templates.
func New(opts Options) (*Page, error) {
	if opts.Reader == nil {
		return nil, fmt.Errorf("fleet page: no reader")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.WorkloadCertTTL == 0 {
		opts.WorkloadCertTTL = ca.DefaultWorkloadCertTTL
	}
	if opts.AuditTail <= 0 {
		opts.AuditTail = 20
	}
	if opts.RefreshSeconds == 0 {
		opts.RefreshSeconds = 15
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Authorize == nil {
		opts.Authorize = LoopbackOnly
	}
	tmpl, err := template.New("fleet.html").Funcs(funcs).ParseFS(assets, "templates/fleet.html")
	if err != nil {
		return nil, fmt.Errorf("fleet page: template: %w", err)
	}
	css, err := assets.ReadFile("static/fleet.css")
	if err != nil {
		return nil, err
	}
	p := &Page{opts: opts, tmpl: tmpl, css: css}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathPage, p.page)
	mux.HandleFunc("GET "+PathJSON, p.json)
	mux.HandleFunc("GET "+PathAsset+"fleet.css", p.stylesheet)
	p.routes = secureHeaders(mux)
	p.handler = opts.Authorize(p.routes)
	return p, nil
}

// ServeHTTP serves /fleet, /fleet.json and /fleet/fleet.css behind
// Options.Authorize (LoopbackOnly by default).
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// Guarded serves the page behind authorize instead of Options.Authorize:
// the server's admin mTLS listener for the page uses it with a check of
// the client's admin certificate on every request. authorize must refuse
// whoever may not read the fleet; it must not be nil.
func (p *Page) Guarded(authorize func(http.Handler) http.Handler) http.Handler {
	return authorize(p.routes)
}

// Routes are the patterns to mount the page under on a mux.
func Routes() []string { return []string{PathPage, PathJSON, PathAsset} }

func (p *Page) fleet(w http.ResponseWriter, r *http.Request) (*Fleet, bool) {
	f, err := build(r.Context(), p.opts.Reader, p.opts.Now(), p.opts)
	if err != nil {
		p.opts.Log.Error("fleet page: cannot read the fleet", "error", err)
		http.Error(w, "cannot read the fleet: "+err.Error(), http.StatusInternalServerError)
		return nil, false
	}
	return f, true
}

func (p *Page) page(w http.ResponseWriter, r *http.Request) {
	f, ok := p.fleet(w, r)
	if !ok {
		return
	}
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, view{Fleet: f, Refresh: p.opts.RefreshSeconds}); err != nil {
		p.opts.Log.Error("fleet page: render", "error", err)
		http.Error(w, "cannot render the fleet page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func (p *Page) json(w http.ResponseWriter, r *http.Request) {
	f, ok := p.fleet(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(f)
}

func (p *Page) stylesheet(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(p.css)
}

// view is what the template gets.
type view struct {
	*Fleet
	Refresh int
}

// secureHeaders forbids everything the page does not use: no script, no
// frame, nothing from another origin.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// LoopbackOnly is the page's guard without credentials (on the plain HTTP
// listener): it serves only peers on a loopback address that asked for a
// loopback host name (so a web page elsewhere cannot reach it through DNS
// rebinding). Other hosts reach the page over admin mTLS instead.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil || !isLoopbackHost(host) {
			http.Error(w, "the fleet page answers only on loopback here: remote access needs admin mTLS (the server's fleetPageListen with adminListen)", http.StatusForbidden)
			return
		}
		if !isLoopbackHost(hostOnly(r.Host)) {
			http.Error(w, "the fleet page answers only to a loopback host name (localhost, 127.0.0.1, [::1])", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// CheckListener refuses to serve the page without credentials on addr
// ("host:port") unless host is a loopback address or localhost: other
// hosts reach the page only over admin mTLS.
func CheckListener(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("fleet page: listener %q: %w", addr, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("fleet page: the HTTP listener %s is not a loopback address, and the page is served there without credentials: remote access needs admin mTLS (serve it with fleetPageListen and adminListen), or listen on 127.0.0.1, or turn the fleet page off", addr)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

// hostOnly strips the port from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
