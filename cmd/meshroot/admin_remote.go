package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshroot/meshroot/ca"
)

// Files of an admin credentials folder (`admin cert issue --out DIR`).
const (
	adminCertFile   = "cert.pem"
	adminKeyFile    = "key.pem"
	adminBundleFile = "trust-bundle.pem"
)

// dialRemoteAdmin connects to a server's remote admin listener at server
// with the admin credentials in dir: it presents the admin client
// certificate and accepts the server only with a certificate from
// meshroot's server CA under a root of the pinned trust bundle
// (ca.VerifyServerChain), as the agent does.
func dialRemoteAdmin(server, dir string) (*grpc.ClientConn, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil || host == "" {
		return nil, usageError{fmt.Errorf("--server %q: want HOST:PORT of the server's remote admin listener", server)}
	}
	if dir == "" {
		return nil, usageError{errors.New("--server needs --admin-cert DIR: the folder `meshroot admin cert issue --out DIR` wrote")}
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, adminCertFile), filepath.Join(dir, adminKeyFile))
	if err != nil {
		return nil, fmt.Errorf("admin credentials in %s: %w (issue them with `meshroot admin cert issue NAME --role ROLE --out %s`)", dir, err, dir)
	}
	bundle, err := readBounded(filepath.Join(dir, adminBundleFile), maxImportFile)
	if err != nil {
		return nil, fmt.Errorf("admin credentials in %s: %w", dir, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("admin credentials: %s holds no PEM certificate", filepath.Join(dir, adminBundleFile))
	}
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		ServerName:   host,
		Certificates: []tls.Certificate{cert},
		// Verification is VerifyServerChain's (the server CA check), in
		// VerifyConnection; Go's own check would accept any CA under a root.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := ca.VerifyServerChain(cs.PeerCertificates, roots, host, time.Now()); err != nil {
				return fmt.Errorf("refusing server %s: %w", server, err)
			}
			return nil
		},
	}
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("remote admin %s: %w", server, err)
	}
	return conn, nil
}
