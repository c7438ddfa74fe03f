package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/server/fleetpage"
)

// ServerConfig assembles a meshroot server.
type ServerConfig struct {
	Service *ca.Service
	// Store is the service's store, for authentication (join tokens).
	Store authn.Store
	// Listen is the gRPC TLS address of the Issuer service ("127.0.0.1:8443").
	Listen string
	// HTTPListen serves /healthz, /readyz and /metrics ("127.0.0.1:8080").
	HTTPListen string
	// AdminSocket is the unix socket of the Admin service (mode 0600).
	AdminSocket string
	// AdminListen, when set, also serves the Admin service on TCP to
	// holders of an admin client certificate (see AdminMethodRoles).
	AdminListen string
	// ServerNames are the DNS names and IP addresses in the server's TLS
	// certificate.
	ServerNames []string
	// ServerCertTTL is the lifetime of the server certificate (default 24h);
	// it is reissued at two thirds of it, and when the active root changes.
	ServerCertTTL time.Duration
	// RefreshHint is sent with trust bundles (default 5m).
	RefreshHint time.Duration
	// BundlePoll is how often the store's bundle sequence is polled for
	// changes made by other processes (default 2s).
	BundlePoll time.Duration
	// Registry receives the server's metrics (default: a new registry).
	Registry *prometheus.Registry
	// FleetCacheTTL is how long one reading of the store serves the fleet
	// metrics (0: DefaultFleetCacheTTL; negative: read at every scrape).
	FleetCacheTTL time.Duration
	// Federation, when set, lets `meshroot federation refresh` reach the
	// federation watchers.
	Federation Refresher
	// Hub, when set, is used instead of a new one (so that other servers
	// in the process, like the bundle endpoint, share it).
	Hub *BundleHub
	// Limits bounds what unauthenticated Issuer callers can make the
	// server hold and write (zero: defaults).
	Limits Limits
	Log    *slog.Logger
	// FleetPage, when set, is served at /fleet, /fleet.json and /fleet/
	// (see package fleetpage): on the HTTP listener, which must then be on
	// a loopback address, unless FleetPageListen is set.
	FleetPage *fleetpage.Page
	// FleetPageListen, when set, serves FleetPage there over HTTPS with
	// admin mTLS instead of on the HTTP listener: the remote admin
	// listener's TLS configuration (AdminListen must be set) and, on every
	// request, AuthorizeAdmin for the viewer role. Any address may be used.
	FleetPageListen string
	// Leadership, when set, says whether this server leads the replicas
	// sharing its store (shown by /readyz); nil: it always leads.
	Leadership *Leadership
}

// Server runs the Issuer service over TLS, the Admin service on a unix
// socket, and the health and metrics endpoints.
type Server struct {
	cfg     ServerConfig
	hub     *BundleHub
	certs   *serverCerts
	health  *health.Server
	grpcTLS *grpc.Server
	grpcAdm *grpc.Server
	issuer  *IssuerServer
	refused *refusals
	http    *http.Server
	// remoteAdm is the remote admin listener (nil when off).
	remoteAdm *remoteAdmin
	// fleetTLS serves the fleet page over admin mTLS (nil when off).
	fleetTLS *fleetTLS

	lnTLS, lnAdm, lnHTTP net.Listener
	ready                chan struct{}
	readyOnce            sync.Once
}

// NewServer binds the listeners (so that a port in use fails here) and
// builds the services; Run serves them.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Service == nil || cfg.Store == nil {
		return nil, errors.New("server: no authority service or store")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ServerCertTTL == 0 {
		cfg.ServerCertTTL = 24 * time.Hour
	}
	if cfg.RefreshHint == 0 {
		cfg.RefreshHint = 5 * time.Minute
	}
	if cfg.BundlePoll == 0 {
		cfg.BundlePoll = 2 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if err := Register(cfg.Registry); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	if err := cfg.Registry.Register(NewFleetCollector(cfg.Service.Store(), cfg.FleetCacheTTL, cfg.Log).WithQuarantines(cfg.Service.ListQuarantines)); err != nil {
		return nil, fmt.Errorf("server: fleet metrics (one server per registry): %w", err)
	}
	s := &Server{cfg: cfg, ready: make(chan struct{})}
	s.hub = cfg.Hub
	if s.hub == nil {
		s.hub = NewBundleHub(cfg.Service, cfg.Log)
	}
	s.certs = newServerCerts(cfg.Service, cfg.ServerNames, cfg.ServerCertTTL, cfg.Log)
	auth := authn.New(cfg.Store, authn.Options{Roots: s.bundleRoots})

	if cfg.FleetPageListen != "" && (cfg.FleetPage == nil || cfg.AdminListen == "") {
		return nil, errors.New("server: the fleet page over admin mTLS (fleetPageListen) needs the page and the remote admin listener: set adminListen too")
	}
	if cfg.FleetPage != nil && cfg.FleetPageListen == "" {
		// Checked before binding: the page without credentials never
		// listens where other hosts reach it, even for a moment.
		if err := fleetpage.CheckListener(cfg.HTTPListen); err != nil {
			return nil, err
		}
	}
	var err error
	if s.lnTLS, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", cfg.Listen, err)
	}
	limits := cfg.Limits.withDefaults()
	s.lnTLS = newLimitListener(s.lnTLS, limits.MaxConnections)
	if s.lnHTTP, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		s.lnTLS.Close()
		return nil, fmt.Errorf("server: listen %s: %w", cfg.HTTPListen, err)
	}
	if s.lnAdm, err = listenUnix(cfg.AdminSocket); err != nil {
		s.lnTLS.Close()
		s.lnHTTP.Close()
		return nil, err
	}

	tlsCfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certs.GetCertificate,
		// Agents renewing present their intermediate; authn verifies it
		// against the trust bundle, so any certificate is requested here.
		ClientAuth: tls.RequestClientCert,
	}
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.refused = newRefusals(cfg.Service, cfg.Log, limits)
	s.grpcTLS = grpc.NewServer(append(limits.issuerServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor(countUnary, s.refused.unary),
		grpc.ChainStreamInterceptor(countStream),
	)...)
	s.issuer = NewIssuerServer(cfg.Service, auth, s.hub, cfg.Log, cfg.RefreshHint)
	s.issuer.refusals = s.refused
	meshrootv1.RegisterIssuerServer(s.grpcTLS, s.issuer)
	healthpb.RegisterHealthServer(s.grpcTLS, s.health)

	s.grpcAdm = grpc.NewServer(grpc.Creds(UnixPeerCredentials()), grpc.ChainUnaryInterceptor(countUnary))
	adm := NewAdminServer(cfg.Service, s.hub, cfg.Log, cfg.Federation, cfg.RefreshHint)
	meshrootv1.RegisterAdminServer(s.grpcAdm, adm)
	if cfg.AdminListen != "" {
		ctx, cancel := context.WithTimeout(context.Background(), remoteAdminTimeout)
		s.remoteAdm, err = newRemoteAdmin(ctx, cfg.Service, cfg.AdminListen, s.certs, adm)
		cancel()
		if err != nil {
			s.lnTLS.Close()
			s.lnHTTP.Close()
			s.lnAdm.Close()
			return nil, err
		}
		if cfg.FleetPageListen != "" {
			if s.fleetTLS, err = s.newFleetTLS(cfg.FleetPageListen, cfg.FleetPage); err != nil {
				s.lnTLS.Close()
				s.lnHTTP.Close()
				s.lnAdm.Close()
				s.remoteAdm.ln.Close()
				return nil, err
			}
		}
	}
	healthpb.RegisterHealthServer(s.grpcAdm, s.health)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	if cfg.FleetPage != nil && cfg.FleetPageListen == "" {
		for _, p := range fleetpage.Routes() {
			mux.Handle("GET "+p, cfg.FleetPage)
		}
	}
	mux.HandleFunc("GET /crl/{file}", s.serveCRL)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Hub returns the server's bundle hub.
func (s *Server) Hub() *BundleHub { return s.hub }

// Addr is the Issuer service's address; HTTPAddr the health endpoint's.
func (s *Server) Addr() string     { return s.lnTLS.Addr().String() }
func (s *Server) HTTPAddr() string { return s.lnHTTP.Addr().String() }

// Ready is closed once the server has a trust bundle and a TLS certificate.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx ends, then stops gracefully: in-flight calls get up
// to 10 s, watch streams are closed, the socket file is removed.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 5)
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	serve("issuer", func() error { return s.grpcTLS.Serve(s.lnTLS) })
	serve("admin", func() error { return s.grpcAdm.Serve(s.lnAdm) })
	if s.remoteAdm != nil {
		serve("remote admin", s.remoteAdm.serve)
	}
	if s.fleetTLS != nil {
		serve("fleet page", s.fleetTLS.serve)
	}
	serve("http", func() error { return s.http.Serve(s.lnHTTP) })
	go s.hub.Run(ctx, s.cfg.BundlePoll)
	go s.certs.run(ctx, s.hub)
	go s.watchReady(ctx)
	refusalsDone := make(chan struct{})
	go func() { s.refused.run(ctx); close(refusalsDone) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.cfg.Log.Info("shutting down")
	s.health.Shutdown()
	s.issuer.Stop()
	stopped := make(chan struct{})
	go func() {
		s.grpcTLS.GracefulStop()
		s.grpcAdm.GracefulStop()
		s.remoteAdm.stop(true)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		s.grpcTLS.Stop()
		s.grpcAdm.Stop()
		s.remoteAdm.stop(false)
	}
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer shutCancel()
	_ = s.http.Shutdown(shutCtx)
	s.fleetTLS.shutdown(shutCtx)
	wg.Wait()
	cancel()
	<-refusalsDone // the last refusal summaries are written
	_ = os.Remove(s.cfg.AdminSocket)
	return err
}

// watchReady marks the server serving once it has a bundle and a cert.
func (s *Server) watchReady(ctx context.Context) {
	for {
		if s.isReady() == nil {
			s.readyOnce.Do(func() {
				s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
				close(s.ready)
			})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) isReady() error {
	if _, ok, _ := s.hub.Current(); !ok {
		return errors.New("no trust bundle: no root yet (run `meshroot root init`)")
	}
	if _, err := s.certs.Current(); err != nil {
		return err
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.isReady(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if _, err := s.cfg.Service.Store().BundleSequence(r.Context()); err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ready (%s)\n", s.cfg.Leadership.Role())
}

// bundleRoots gives authn the roots that renewal certificates must chain to.
func (s *Server) bundleRoots(ctx context.Context) ([]*x509.Certificate, error) {
	tb, ok := s.hub.Local()
	if !ok {
		return nil, errors.New("no trust bundle yet")
	}
	return tb.Roots, nil
}

// listenUnix listens on a unix socket readable and writable by the owner
// only, in a folder only the owner can enter (created so, or refused when it
// is not: see CheckSocketDir), replacing a stale socket.
func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("server: no admin socket path")
	}
	if err := prepareSocketDir(path); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("server: admin socket %s is in use: is another meshroot server running?", path)
	}
	_ = os.Remove(path)
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
