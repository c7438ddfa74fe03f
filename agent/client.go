package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/fsutil"
)

// Metadata keys, as the server reads them.
const (
	mdJoinToken     = "x-meshroot-join-token"
	mdAuthorization = "authorization"
)

// maxTokenFile bounds a projected service-account token file.
const maxTokenFile = 16 << 10

// client is a connection to the server. A connection either presents a
// client certificate (the cluster's intermediate, for renewal) or none; the
// agent keeps one without for the watch and token calls, and one with the
// certificate for renewals and reports (certconn.go), because an
// established HTTP/2 connection never presents a certificate it did not
// start with.
type client struct {
	conn   *grpc.ClientConn
	issuer meshrootv1.IssuerClient
}

// dial connects to servers (the replicas of one meshroot service, see
// target), verifying each one's certificate against the roots that roots
// returns at each handshake: the --server-ca file plus every root of the
// latest trust bundle, so that the server stays trusted when it moves to a
// new root during rotation. The server's certificate must come from
// meshroot's server CA (ca.VerifyServerChain): a certificate for the
// server's name that a cluster intermediate signed (whoever holds one
// cluster's cacerts key can make one) is refused.
func dial(servers []string, roots func() *x509.CertPool, cert *tls.Certificate, extra ...grpc.DialOption) (*client, error) {
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("--server %q: want host:port", s)
		}
	}
	c := &client{}
	tlsFor := func(host string) *tls.Config {
		return &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: host,
			// Verification happens in VerifyConnection, against a pool that
			// can change between handshakes; Go's own check would pin one pool.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				return verifyServer(host, cs.PeerCertificates, roots())
			},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cert == nil {
					return &tls.Certificate{}, nil
				}
				return cert, nil
			},
		}
	}
	tgt, opts := target(servers)
	conn, err := grpc.NewClient(tgt, append(append(append(dialOptions(), opts...), extra...), grpc.WithTransportCredentials(newHostCreds(tlsFor)))...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", strings.Join(servers, ","), err)
	}
	c.conn, c.issuer = conn, meshrootv1.NewIssuerClient(conn)
	return c, nil
}

func (c *client) close() error { return c.conn.Close() }

// verifyServer checks the chain the server at host presented.
func verifyServer(host string, certs []*x509.Certificate, roots *x509.CertPool) error {
	err := ca.VerifyServerChain(certs, roots, host, time.Now())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ca.ErrNotServerCA):
		return fmt.Errorf("refusing server %s: %w. Either something that is not meshroot answers at --server (check the address and the network path), or the meshroot server predates the server CA and must be upgraded before its agents", host, err)
	default:
		return fmt.Errorf("server %s certificate: %w (is --server-ca right?)", host, err)
	}
}

// credentials are the tokens the agent can present.
type credentialSource struct {
	joinToken string
	tokenFile string
	used      bool // a join token works once
	// joinKey and joinCSR are the key and CSR of a join-token request
	// whose answer was lost (a deadline, a dropped connection): the server
	// may have spent the token with that key, and answers only a retry
	// with the same key (see server/authn). Only issue touches them; the
	// reconcile loop runs it one at a time.
	joinKey crypto.Signer
	joinCSR *x509.CertificateRequest
}

// withToken adds the best available token to ctx: the projected
// service-account token (re-read each time, it rotates), else the join
// token if it was not used yet. It reports which it added.
func (s *credentialSource) withToken(ctx context.Context) (context.Context, string, error) {
	if s.tokenFile != "" {
		b, err := fsutil.ReadBounded(s.tokenFile, maxTokenFile)
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return metadata.AppendToOutgoingContext(ctx, mdAuthorization, "Bearer "+strings.TrimSpace(string(b))), "service-account token", nil
		}
		if s.joinToken == "" {
			return ctx, "", fmt.Errorf("service-account token %s: %v", s.tokenFile, errOr(err, "empty file"))
		}
	}
	if s.joinToken != "" && !s.used {
		return metadata.AppendToOutgoingContext(ctx, mdJoinToken, s.joinToken), "join token", nil
	}
	return ctx, "", nil
}

func errOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}
