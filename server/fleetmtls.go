package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server/fleetpage"
)

// fleetPageWhat names the fleet page in admin refusals and their audit rows.
const fleetPageWhat = "fleet page"

// fleetTLS serves the fleet page over HTTPS to holders of an admin client
// certificate: the remote admin listener's TLS configuration (a client
// certificate of the admin CA required at the handshake) and, on every
// request, AuthorizeAdmin for the viewer role (recorded, not revoked, not
// expired), so that other hosts can read the page without a loopback
// shortcut.
type fleetTLS struct {
	ln   net.Listener
	http *http.Server
}

// newFleetTLS binds addr for the page behind admin mTLS. The remote admin
// listener must be on (s.remoteAdm).
func (s *Server) newFleetTLS(addr string, page *fleetpage.Page) (*fleetTLS, error) {
	if s.remoteAdm == nil {
		return nil, errors.New("server: the fleet page over admin mTLS (fleetPageListen) needs the remote admin listener: set adminListen too")
	}
	cfg := s.AdminTLSConfig()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen %s (fleet page over admin mTLS): %w", addr, err)
	}
	log := s.cfg.Log.With("component", "fleet-page")
	return &fleetTLS{ln: ln, http: &http.Server{
		Handler:           page.Guarded(s.authorizeFleet(log)),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// A refused handshake (no admin certificate, one of another CA,
		// an expired one) is logged here, as net/http reports it.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

// authorizeFleet checks the admin client certificate of every request for
// the viewer role; a refusal is answered 403 (503 when the store cannot
// tell), logged, and audited by AuthorizeAdmin when the certificate is one
// the admin CA issued.
func (s *Server) authorizeFleet(log *slog.Logger) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			actor, err := s.AuthorizeAdmin(r.Context(), r.TLS, ca.RoleViewer, fleetPageWhat)
			if err != nil {
				st := status.Convert(err)
				code := http.StatusForbidden
				if st.Code() == codes.Unavailable {
					code = http.StatusServiceUnavailable
				}
				log.Warn("fleet page refused", "peer", r.RemoteAddr, "path", r.URL.Path, "reason", st.Message())
				http.Error(w, "fleet page: "+st.Message(), code)
				return
			}
			log.Debug("fleet page read", "actor", string(actor), "path", r.URL.Path)
			h.ServeHTTP(w, r)
		})
	}
}

// FleetPageAddr is the address of the fleet page over admin mTLS ("" when
// the page is not served that way).
func (s *Server) FleetPageAddr() string {
	if s.fleetTLS == nil {
		return ""
	}
	return s.fleetTLS.ln.Addr().String()
}

// serve serves until shutdown.
func (f *fleetTLS) serve() error { return f.http.ServeTLS(f.ln, "", "") }

// shutdown stops the page's server, waiting for requests in flight until
// ctx ends.
func (f *fleetTLS) shutdown(ctx context.Context) {
	if f != nil {
		_ = f.http.Shutdown(ctx)
	}
}
