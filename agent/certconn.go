package agent

import (
	"crypto/sha256"
	"crypto/tls"
	"sync"
	"time"

	"google.golang.org/grpc"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// certConnIdle is how long the connection with the intermediate stays
// open without a call. A fleet change makes every agent report, and the
// reports of a busy hour (clusters joining, a rotation) go over one
// connection instead of one TLS handshake each, on the agent and on the
// server; between them only the watch's connection stays open.
const certConnIdle = 2 * time.Minute

// certConn is the connection that presents the cluster's intermediate as
// client certificate, for renewals and status reports. An established
// HTTP/2 connection never presents a certificate it did not start with,
// so it is kept only while the intermediate stays the same: a new one
// gets a new connection, and the old connection is closed.
type certConn struct {
	mu   sync.Mutex
	leaf [sha256.Size]byte // SHA-256 of the certificate the connection presents
	c    *client
}

// withCert runs f on a connection that presents cert (the cluster's
// intermediate and its chain).
func (a *Agent) withCert(cert *tls.Certificate, f func(meshrootv1.IssuerClient) error) error {
	c, err := a.certConn.get(cert, func() (*client, error) {
		return dial(a.servers, a.serverRoots, cert, grpc.WithIdleTimeout(certConnIdle))
	})
	if err != nil {
		return err
	}
	return f(c.issuer)
}

// get returns the connection for cert, dialled now unless the one held
// presents the same certificate.
func (cc *certConn) get(cert *tls.Certificate, dial func() (*client, error)) (*client, error) {
	var leaf [sha256.Size]byte
	if len(cert.Certificate) > 0 {
		leaf = sha256.Sum256(cert.Certificate[0])
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.c != nil && cc.leaf == leaf {
		return cc.c, nil
	}
	c, err := dial()
	if err != nil {
		return nil, err
	}
	if cc.c != nil {
		_ = cc.c.close() // the previous intermediate's
	}
	cc.c, cc.leaf = c, leaf
	return c, nil
}

// close closes the connection held, if any.
func (cc *certConn) close() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.c != nil {
		_ = cc.c.close()
		cc.c = nil
	}
}
