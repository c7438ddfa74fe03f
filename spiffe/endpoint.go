package spiffe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Profile is how the bundle endpoint authenticates itself to clients
// (SPIFFE Trust Domain and Bundle specification, section 5).
type Profile string

// Bundle endpoint profiles.
const (
	// ProfileWeb serves a Web PKI certificate read from files.
	ProfileWeb Profile = "https_web"
	// ProfileSPIFFE serves an X.509-SVID of the trust domain.
	ProfileSPIFFE Profile = "https_spiffe"
)

// Server limits of the bundle endpoint. A bundle request is one small GET,
// so every phase of a connection is short: a client that trickles its
// handshake or headers is cut off after endpointReadHeaderTimeout.
const (
	endpointReadHeaderTimeout = 5 * time.Second
	endpointReadTimeout       = 10 * time.Second
	endpointWriteTimeout      = 10 * time.Second
	endpointIdleTimeout       = 60 * time.Second
	endpointMaxHeaderBytes    = 16 << 10
	endpointShutdownTimeout   = 5 * time.Second
)

// EndpointConfig configures a bundle endpoint.
type EndpointConfig struct {
	// Listen is the TCP address to bind ("127.0.0.1:8443", ":8443").
	Listen  string
	Profile Profile
	// CertFile and KeyFile hold the https_web certificate (chain) and key,
	// PEM. They are reloaded when they change on disk, without a restart:
	// their mtime, size and identity are checked at most once a second, and
	// a pair that does not load keeps the last good one in use.
	CertFile, KeyFile string
	// SVIDs serves the https_spiffe SVID. Run it (SVIDSource.Run) beside
	// the endpoint to keep the SVID fresh.
	SVIDs *SVIDSource
	// Handler serves the requests, normally NewHandler's.
	Handler http.Handler
	Log     *slog.Logger
}

// Endpoint is an HTTPS server for the SPIFFE bundle.
type Endpoint struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// NewEndpoint checks cfg, loads the https_web certificate and binds the
// listener. Serve with Run.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.Handler == nil {
		return nil, errors.New("bundle endpoint: no handler")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch cfg.Profile {
	case ProfileWeb:
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, errors.New("bundle endpoint: the https_web profile needs a certificate and key file (--bundle-endpoint-cert, --bundle-endpoint-key)")
		}
		if cfg.SVIDs != nil {
			return nil, errors.New("bundle endpoint: an SVID source is for the https_spiffe profile only")
		}
		rl, err := newCertReloader(cfg.CertFile, cfg.KeyFile, log)
		if err != nil {
			return nil, err
		}
		tlsCfg.GetCertificate = rl.GetCertificate
	case ProfileSPIFFE:
		if cfg.SVIDs == nil {
			return nil, errors.New("bundle endpoint: the https_spiffe profile needs an SVID source")
		}
		if cfg.CertFile != "" || cfg.KeyFile != "" {
			return nil, errors.New("bundle endpoint: certificate files are for the https_web profile only")
		}
		tlsCfg.GetCertificate = cfg.SVIDs.GetCertificate
	default:
		return nil, fmt.Errorf("bundle endpoint: profile %q is unknown: use %s or %s", cfg.Profile, ProfileWeb, ProfileSPIFFE)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint: %w", err)
	}
	srv := &http.Server{
		Handler:           cfg.Handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: endpointReadHeaderTimeout,
		ReadTimeout:       endpointReadTimeout,
		WriteTimeout:      endpointWriteTimeout,
		IdleTimeout:       endpointIdleTimeout,
		MaxHeaderBytes:    endpointMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return &Endpoint{ln: ln, srv: srv, log: log}, nil
}

// Addr returns the address the endpoint listens on.
func (e *Endpoint) Addr() string { return e.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: it stops
// accepting, lets requests in flight finish (5 s at most) and returns nil.
func (e *Endpoint) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- e.srv.ServeTLS(e.ln, "", "") }()
	e.log.Info("bundle endpoint serving", "addr", e.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("bundle endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), endpointShutdownTimeout)
	defer cancel()
	err := e.srv.Shutdown(sctx)
	if err != nil {
		_ = e.srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("bundle endpoint: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("bundle endpoint shutdown: %w", err)
	}
	return nil
}

// certReloader serves a certificate from files and reloads it when they
// change.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	interval          time.Duration
	now               func() time.Time

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanoseconds

	mu                sync.Mutex // one check at a time
	certStat, keyStat os.FileInfo
	failedC, failedK  os.FileInfo // the pair that last failed to load
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, interval: time.Second, now: time.Now}
	cs, ks, err := r.stat()
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint certificate: %w", err)
	}
	r.cert.Store(&cert)
	r.certStat, r.keyStat = cs, ks
	r.nextCheck.Store(r.now().Add(r.interval).UnixNano())
	return r, nil
}

func (r *certReloader) stat() (os.FileInfo, os.FileInfo, error) {
	cs, err := os.Stat(r.certFile)
	if err != nil {
		return nil, nil, err
	}
	ks, err := os.Stat(r.keyFile)
	if err != nil {
		return nil, nil, err
	}
	return cs, ks, nil
}

// GetCertificate returns the current pair, reloading it first when the
// files changed since the last check (at most one check a second).
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := r.now()
	if next := r.nextCheck.Load(); now.UnixNano() >= next && r.nextCheck.CompareAndSwap(next, now.Add(r.interval).UnixNano()) {
		r.check()
	}
	return r.cert.Load(), nil
}

func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// check reloads the pair when either file changed; on a bad read it keeps
// the last good pair and tries again once the files change again.
func (r *certReloader) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, ks, err := r.stat()
	if err != nil {
		r.log.Warn("bundle endpoint certificate: cannot stat the files; keeping the last good certificate", "cert_file", r.certFile, "key_file", r.keyFile, "error", err)
		return
	}
	if sameFile(cs, r.certStat) && sameFile(ks, r.keyStat) {
		return
	}
	if sameFile(cs, r.failedC) && sameFile(ks, r.failedK) {
		return // this pair failed already; wait for the next change
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failedC, r.failedK = cs, ks
		r.log.Warn("bundle endpoint certificate: the changed files do not load; keeping the last good certificate", "cert_file", r.certFile, "key_file", r.keyFile, "error", err)
		return
	}
	r.cert.Store(&cert)
	r.certStat, r.keyStat = cs, ks
	r.failedC, r.failedK = nil, nil
	serial := ""
	if cert.Leaf != nil {
		serial = cert.Leaf.SerialNumber.Text(16)
	}
	r.log.Info("bundle endpoint certificate reloaded", "cert_file", r.certFile, "serial", serial)
}
