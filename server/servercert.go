package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/certkeeper"
)

// serverCerts keeps the Issuer endpoint's TLS certificate: a leaf for the
// server's names, for a P-256 key made in memory, signed by meshroot's
// server CA under the active root (ca.Service.ServerAuthority), so that
// agents can tell it from anything a cluster intermediate signs. The
// keeper renews it by certkeeper's rule (half its lifetime), and it is
// reissued whenever the trust bundle changes (a new active root).
type serverCerts struct {
	*certkeeper.Keeper
}

func newServerCerts(svc *ca.Service, names []string, ttl time.Duration, log *slog.Logger) *serverCerts {
	n := ca.ParseServerNames(names)
	svc.SetServerNames(n)
	issue := func(ctx context.Context) (*tls.Certificate, error) {
		_, auth, err := svc.ServerAuthority(ctx)
		if err != nil {
			return nil, certkeeper.Waiting(err)
		}
		cert, err := certkeeper.Sign(auth, ca.ServerCertRequest{DNSNames: n.DNSNames, IPs: n.IPs, TTL: ttl})
		if err != nil {
			return nil, err
		}
		log.Info("server certificate issued", "names", names, "serial", ca.SerialHex(cert.Leaf.SerialNumber), "not_after", cert.Leaf.NotAfter)
		return cert, nil
	}
	return &serverCerts{certkeeper.New("server certificate", issue, log)}
}

// run keeps the certificate fresh until ctx ends, reissuing it on every
// change of the trust bundle.
func (c *serverCerts) run(ctx context.Context, hub *BundleHub) {
	go func() { _ = c.Run(ctx) }()
	for {
		_, _, changed := hub.Current()
		select {
		case <-ctx.Done():
			return
		case <-changed:
			c.Reissue()
		}
	}
}
