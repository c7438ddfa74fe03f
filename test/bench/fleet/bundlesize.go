package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// bundleShape is what one trust bundle message (as every watcher gets it
// at every change) weighs.
type bundleShape struct {
	bytes, intermediates, crls int
}

func (b bundleShape) String() string {
	return fmt.Sprintf("%.1f KiB (%d intermediates, %d CRLs in its CRL set)", float64(b.bytes)/1024, b.intermediates, b.crls)
}

// measureBundle fetches the trust bundle as agents get it (the Issuer's
// GetTrustBundle, no credential needed) and sizes it.
func measureBundle(ctx context.Context, addr string, rootsPEM []byte) (bundleShape, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootsPEM)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
	if err != nil {
		return bundleShape{}, err
	}
	defer conn.Close()
	b, err := meshrootv1.NewIssuerClient(conn).GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{}, grpc.MaxCallRecvMsgSize(256<<20))
	if err != nil {
		return bundleShape{}, err
	}
	return bundleShape{bytes: proto.Size(b), intermediates: len(b.GetCrls().GetIntermediates()), crls: len(b.GetCrls().GetCrls())}, nil
}
