package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// serverCerts keeps the Issuer endpoint's TLS certificate: a P-256 key made
// in memory and a leaf from the active root, reissued at two thirds of its
// lifetime and whenever the trust bundle changes (a new active root).
type serverCerts struct {
	svc   *ca.Service
	names []string
	ttl   time.Duration
	log   *slog.Logger

	mu   sync.RWMutex
	cert *tls.Certificate
	err  error
}

func newServerCerts(svc *ca.Service, names []string, ttl time.Duration, log *slog.Logger) *serverCerts {
	return &serverCerts{svc: svc, names: names, ttl: ttl, log: log, err: errors.New("no server certificate yet: the server has no active root")}
}

// get is tls.Config.GetCertificate.
func (c *serverCerts) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, c.err
}

// run issues the certificate and keeps it fresh until ctx ends.
func (c *serverCerts) run(ctx context.Context, hub *BundleHub) {
	for {
		next := c.issue(ctx)
		_, _, changed := hub.Current()
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		case <-changed:
		}
	}
}

// issue makes a new certificate and says when to make the next one.
func (c *serverCerts) issue(ctx context.Context) time.Duration {
	_, auth, err := c.svc.ActiveAuthority(ctx)
	if err == nil {
		var key *ecdsa.PrivateKey
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err == nil {
			req := ca.ServerCertRequest{PublicKey: key.Public(), TTL: c.ttl}
			for _, n := range c.names {
				if ip := net.ParseIP(n); ip != nil {
					req.IPs = append(req.IPs, ip)
				} else {
					req.DNSNames = append(req.DNSNames, n)
				}
			}
			leaf, serr := auth.SignServerCert(req)
			if serr == nil {
				chain := [][]byte{leaf.Raw}
				for _, ca := range auth.Chain()[:len(auth.Chain())-1] {
					chain = append(chain, ca.Raw)
				}
				c.mu.Lock()
				c.cert, c.err = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
				c.mu.Unlock()
				c.log.Info("server certificate issued", "names", c.names, "not_after", leaf.NotAfter)
				return time.Until(leaf.NotAfter) * 2 / 3
			}
			err = serr
		}
	}
	c.mu.Lock()
	if c.cert == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.log.Warn("server certificate not issued; retrying", "error", err)
	return 5 * time.Second
}
