package spiffe

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// DefaultRefreshHint is the refresh hint served when neither the handler
// nor the trust bundle sets one.
const DefaultRefreshHint = 5 * time.Minute

// NewHandler serves the trust bundle that source returns as a SPIFFE bundle
// document (JWKS, keys with use x509-svid, spiffe_sequence and
// spiffe_refresh_hint) at "/" and nowhere else (404), to GET and HEAD only
// (405 with Allow: GET, HEAD). source reports false while there is no
// bundle yet (503). It is called on every request, so it must be cheap:
// hand it a cached value, not a store query.
//
// The refresh hint is refreshHint, or when that is zero the bundle's own,
// or DefaultRefreshHint; it is also the response's Cache-Control max-age.
//
// The document is marshalled once per bundle (trust domain, sequence,
// refresh hint) and its bytes, strong ETag and headers are reused by every
// request until the sequence changes; If-None-Match gets 304.
func NewHandler(source func() (ca.TrustBundle, bool), refreshHint time.Duration, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return &handler{source: source, hint: refreshHint, log: log}
}

type handler struct {
	source func() (ca.TrustBundle, bool)
	hint   time.Duration
	log    *slog.Logger

	cur      atomic.Pointer[document]
	mu       sync.Mutex   // serialises marshalling
	marshals atomic.Int64 // how many documents were built (tests)
}

// document is one marshalled bundle with its prebuilt header values.
type document struct {
	td     string
	seq    uint64
	hint   time.Duration
	nroots int

	body          []byte
	etag          string
	contentType   []string
	etagHdr       []string
	cacheControl  []string
	contentLength []string
}

var (
	hdrJSON    = []string{"application/json"}
	hdrNoSniff = []string{"nosniff"}
	allowed    = "GET, HEAD"
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		plainError(w, http.StatusNotFound, "not found: the SPIFFE bundle is served at /")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", allowed)
		plainError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: use GET or HEAD")
		return
	}
	tb, ok := h.source()
	if !ok || len(tb.Roots) == 0 {
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Cache-Control", "no-store")
		plainError(w, http.StatusServiceUnavailable, "no trust bundle yet: the trust domain has no root (run `meshroot root init --trust-domain TD`)")
		return
	}
	d, err := h.document(tb)
	if err != nil {
		h.log.Error("bundle endpoint: cannot marshal the trust bundle", "trust_domain", tb.TrustDomain, "sequence", tb.Sequence, "error", err)
		plainError(w, http.StatusInternalServerError, "the trust bundle cannot be served: see the server log")
		return
	}
	hdr := w.Header()
	hdr["Etag"] = d.etagHdr
	hdr["Cache-Control"] = d.cacheControl
	if etagMatches(r.Header.Get("If-None-Match"), d.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr["Content-Type"] = d.contentType
	hdr["Content-Length"] = d.contentLength
	hdr["X-Content-Type-Options"] = hdrNoSniff
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(d.body)
	}
}

// document returns the marshalled form of tb, building it when tb is not
// the bundle marshalled last.
func (h *handler) document(tb ca.TrustBundle) (*document, error) {
	hint := h.hint
	if hint <= 0 {
		hint = tb.RefreshHint
	}
	if hint <= 0 {
		hint = DefaultRefreshHint
	}
	same := func(d *document) bool {
		return d != nil && d.seq == tb.Sequence && d.td == tb.TrustDomain && d.hint == hint && d.nroots == len(tb.Roots)
	}
	if d := h.cur.Load(); same(d) {
		return d, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.cur.Load(); same(d) {
		return d, nil
	}
	tb.RefreshHint = hint
	body, err := MarshalBundle(tb)
	if err != nil {
		return nil, err
	}
	h.marshals.Add(1)
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	seconds := int64((hint + time.Second - 1) / time.Second)
	d := &document{
		td: tb.TrustDomain, seq: tb.Sequence, hint: hint, nroots: len(tb.Roots),
		body: body, etag: etag,
		contentType:   hdrJSON,
		etagHdr:       []string{etag},
		cacheControl:  []string{"max-age=" + strconv.FormatInt(seconds, 10)},
		contentLength: []string{strconv.Itoa(len(body))},
	}
	h.cur.Store(d)
	h.log.Debug("bundle endpoint: serving a new bundle", "trust_domain", tb.TrustDomain, "sequence", tb.Sequence, "roots", len(tb.Roots), "etag", etag)
	return d, nil
}

// etagMatches implements If-None-Match: "*" or any listed entity tag equal
// to etag under weak comparison (RFC 9110, 13.1.2).
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" {
			return true
		}
		t = strings.TrimPrefix(t, "W/")
		if t == etag {
			return true
		}
	}
	return false
}

func plainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}
