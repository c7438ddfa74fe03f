package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/meshroot/meshroot/server/authn"
)

// Metadata keys that carry requester credentials.
const (
	// MetadataJoinToken carries a join token.
	MetadataJoinToken = "x-meshroot-join-token"
	// MetadataAuthorization carries "Bearer <service-account token>".
	MetadataAuthorization = "authorization"
)

// maxCredentialLen bounds a credential taken from metadata.
const maxCredentialLen = 16 << 10

// credentialFrom gathers the credential a request presents: a join token or
// bearer token from metadata and the TLS client certificate chain.
func credentialFrom(ctx context.Context) authn.Credential {
	var cred authn.Credential
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(MetadataJoinToken); len(v) == 1 && len(v[0]) <= maxCredentialLen {
			cred.JoinToken = v[0]
		}
		if v := md.Get(MetadataAuthorization); len(v) == 1 && len(v[0]) <= maxCredentialLen {
			if tok, ok := strings.CutPrefix(v[0], "Bearer "); ok {
				cred.BearerToken = strings.TrimSpace(tok)
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cred.PeerChain = peerChain(ti.State)
		}
	}
	return cred
}

func peerChain(cs tls.ConnectionState) []*x509.Certificate {
	return cs.PeerCertificates
}
