package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// intermediate for renewal when it has a valid one, and falls back to a
// token when the server refuses that.
func (a *Agent) issue(ctx context.Context, cur *Current, now time.Time) (ca.Issued, crypto.Signer, error) {
	// A join whose answer was lost is retried with the same key and CSR.
	key, csr := a.creds.joinKey, a.creds.joinCSR
	if key == nil {
		var err error
		if key, err = a.cfg.KeyType.Generate(); err != nil {
			return ca.Issued{}, nil, err
		}
		if csr, err = newCSR(a.cfg.Cluster, key); err != nil {
			return ca.Issued{}, nil, err
		}
	}
	var err error
	req := &meshrootv1.SignIntermediateRequest{Cluster: a.cfg.Cluster, Csr: csr.Raw, TtlSeconds: int64(a.cfg.TTL / time.Second)}
	var resp *meshrootv1.SignIntermediateResponse
	if renewal := a.renewalCert(cur, now); renewal != nil {
		err = a.withCert(renewal, func(c meshrootv1.IssuerClient) error {
			var cerr error
			resp, cerr = c.SignIntermediate(ctx, req)
			return cerr
		})
		if err == nil {
			a.creds.joinKey, a.creds.joinCSR = nil, nil // the next key is new
			return a.issued(resp, key)
		}
		if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
			return ca.Issued{}, nil, fmt.Errorf("sign intermediate (renewal): %w", err)
		}
		a.log.Warn("renewal with the current intermediate refused; trying a token", "error", status.Convert(err).Message())
	}
	tctx, kind, err := a.creds.withToken(ctx)
	if err != nil {
		return ca.Issued{}, nil, err
	}
	if kind == "" {
		return ca.Issued{}, nil, permanent(errors.New("no usable credential: the join token was used and there is no service-account token; create a new join token (meshroot token create) or configure --token-file"))
	}
	resp, err = a.client.issuer.SignIntermediate(tctx, req)
	if kind == "join token" && (err == nil || status.Code(err) == codes.Unauthenticated) {
		a.creds.used = true // spent by the first request that reached the server
	}
	if kind == "join token" || err == nil {
		a.creds.joinKey, a.creds.joinCSR = nil, nil
		if err != nil && !isRefusal(status.Code(err)) {
			// The server may have spent the token with this key and
			// issued: the retry must present the same key to get that.
			a.creds.joinKey, a.creds.joinCSR = key, csr
		}
	}
	if err != nil {
		st := status.Convert(err)
		if isRefusal(st.Code()) {
			return ca.Issued{}, nil, permanent(&ca.PolicyError{Err: fmt.Errorf("server refused the %s: %s", kind, st.Message())})
		}
		return ca.Issued{}, nil, fmt.Errorf("sign intermediate: %w", err)
	}
	return a.issued(resp, key)
}

// isRefusal reports whether code is the server's definite answer to a
// request (retrying the same request cannot succeed).
func isRefusal(code codes.Code) bool {
	return code == codes.Unauthenticated || code == codes.PermissionDenied || code == codes.InvalidArgument
}

func (a *Agent) issued(resp *meshrootv1.SignIntermediateResponse, key crypto.Signer) (ca.Issued, crypto.Signer, error) {
	chain, err := parseDERs(resp.GetCertChain())
	if err != nil || len(chain) == 0 {
		return ca.Issued{}, nil, fmt.Errorf("server sent a bad chain: %v", err)
	}
	roots, err := parseDERs(resp.GetTrustedRoots())
	if err != nil || len(roots) == 0 {
		return ca.Issued{}, nil, fmt.Errorf("server sent bad roots: %v", err)
	}
	return ca.Issued{
		Cert: chain[0], Chain: chain, RootID: resp.GetRootId(),
		Bundle: ca.TrustBundle{Roots: roots, Sequence: resp.GetBundleSequence()},
	}, key, nil
}

// renewalCert is the current intermediate as a TLS client certificate, when
// it is meshroot's and still valid.
func (a *Agent) renewalCert(cur *Current, now time.Time) *tls.Certificate {
	if cur.CACerts == nil || !cur.ManagedByMeshroot() || now.After(cur.CACerts.Cert.NotAfter) {
		return nil
	}
	chain := make([][]byte, 0, len(cur.CACerts.Chain))
	for _, c := range cur.CACerts.Chain {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: cur.CACerts.Key, Leaf: cur.CACerts.Cert}
}

// AnnotationIssuedAt records when the agent received the intermediate.
const AnnotationIssuedAt = "meshroot.io/issued-at"

// renewAt is when to renew cert: RenewFraction into its lifetime, moved
// earlier by up to 5% of the time to renewal so that clusters do not all
// come at once (the same for every call: it is derived from the serial).
// The lifetime starts when the agent received the certificate (annotation
// issued-at), not at NotBefore, which the server backdates for clock skew:
// counted from NotBefore, a short lifetime could put the renewal in the
// past at once and make the agent renew in a loop.
func (a *Agent) renewAt(cert *x509.Certificate, annotations map[string]string) time.Time {
	start := cert.NotBefore
	if t, err := time.Parse(time.RFC3339, annotations[AnnotationIssuedAt]); err == nil && t.After(start) && t.Before(cert.NotAfter) {
		start = t
	}
	toRenew := time.Duration(float64(cert.NotAfter.Sub(start)) * a.cfg.RenewFraction)
	h := fnv.New64a()
	h.Write(cert.SerialNumber.Bytes())
	jitter := float64(h.Sum64()%1000) / 1000
	return start.Add(toRenew - time.Duration(jitter*0.05*float64(toRenew)))
}
