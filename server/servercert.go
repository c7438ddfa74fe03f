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
// reissued when the active root changes.
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

// run keeps the certificate fresh until ctx ends, reissuing it when the
// active root changes (the server CA hangs under it). Other bundle changes
// (a prepared or retired root, every CRL an agent sends, federated
// bundles) leave the certificate valid and trusted: reissuing on each of
// them signed a new certificate for every cluster that joined or renewed.
func (c *serverCerts) run(ctx context.Context, hub *BundleHub) {
	go func() { _ = c.Run(ctx) }()
	var active string
	for {
		b, ok, changed := hub.Current()
		var again bool
		if active, again = reissueFor(active, b, ok); again {
			c.Reissue()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// reissueFor says whether bundles b (ok: there are any) call for a new
// server certificate when the last one was made under active, and
// returns the active root to remember.
func reissueFor(active string, b Bundles, ok bool) (string, bool) {
	if !ok || b.ActiveRootID == active {
		return active, false
	}
	return b.ActiveRootID, true
}
