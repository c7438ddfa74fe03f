// Package wire converts between the admin and issuer API's messages
// (api/meshroot/v1) and meshroot's own types (ca, store), in both
// directions, for the servers in server/ and the client in api/adminclient.
// Each message is converted here and nowhere else.
package wire

import (
	"crypto/x509"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// TS converts a time; the zero time becomes an unset timestamp.
func TS(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// FromTS converts a timestamp; an unset one becomes the zero time.
func FromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// Seconds converts a duration to whole seconds.
func Seconds(d time.Duration) int64 { return int64(d / time.Second) }

// FromSeconds converts whole seconds to a duration.
func FromSeconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// List converts each element of ms with f (an empty list stays non-nil, so
// that it prints as [] in JSON).
func List[M, T any](ms []M, f func(M) T) []T {
	out := make([]T, 0, len(ms))
	for _, m := range ms {
		out = append(out, f(m))
	}
	return out
}

// DERList returns the certificates' DER encodings.
func DERList(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// ParseDERList parses DER certificates.
func ParseDERList(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", i+1, err)
		}
		out[i] = c
	}
	return out, nil
}

// RootToProto converts a stored root.
func RootToProto(r store.Root) (*meshrootv1.Root, error) {
	chain, err := ca.ParseCerts(r.ChainPEM)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", r.ID, err)
	}
	return &meshrootv1.Root{
		Id: r.ID, TrustDomain: r.TrustDomain, State: string(r.State), KeyRef: r.KeyRef,
		Chain: DERList(chain), NotAfter: TS(r.NotAfter), CreatedAt: TS(r.CreatedAt),
	}, nil
}

// RootFromProto converts a root message. A root without a chain (the answer
// to a dry run) keeps only its trust domain and state.
func RootFromProto(m *meshrootv1.Root) (store.Root, error) {
	chain, err := ParseDERList(m.GetChain())
	if err != nil {
		return store.Root{}, fmt.Errorf("root %s: %w", m.GetId(), err)
	}
	r := store.Root{
		ID: m.GetId(), TrustDomain: m.GetTrustDomain(), State: store.RootState(m.GetState()), KeyRef: m.GetKeyRef(),
		NotAfter: FromTS(m.GetNotAfter()), CreatedAt: FromTS(m.GetCreatedAt()),
	}
	if len(chain) > 0 {
		r.ChainPEM = ca.EncodeCerts(chain)
	}
	return r, nil
}

// RootsToProto converts stored roots.
func RootsToProto(roots []store.Root) ([]*meshrootv1.Root, error) {
	out := make([]*meshrootv1.Root, 0, len(roots))
	for _, r := range roots {
		m, err := RootToProto(r)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// RootsFromProto converts root messages.
func RootsFromProto(ms []*meshrootv1.Root) ([]store.Root, error) {
	out := make([]store.Root, 0, len(ms))
	for _, m := range ms {
		r, err := RootFromProto(m)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// InitRootRequestToProto converts a root init request.
func InitRootRequestToProto(r ca.InitRootRequest) *meshrootv1.InitRootRequest {
	return &meshrootv1.InitRootRequest{TrustDomain: r.TrustDomain, KeyType: string(r.KeyType), TtlSeconds: Seconds(r.TTL)}
}

// InitRootRequestFromProto converts a root init request message.
func InitRootRequestFromProto(m *meshrootv1.InitRootRequest) (ca.InitRootRequest, error) {
	kt, err := keys.ParseKeyType(m.GetKeyType())
	return ca.InitRootRequest{TrustDomain: m.GetTrustDomain(), KeyType: kt, TTL: FromSeconds(m.GetTtlSeconds())}, err
}

// PrepareRootRequestToProto converts a root prepare request.
func PrepareRootRequestToProto(r ca.PrepareRootRequest) *meshrootv1.PrepareRootRequest {
	return &meshrootv1.PrepareRootRequest{KeyType: string(r.KeyType), TtlSeconds: Seconds(r.TTL), CrossSign: r.CrossSign, DryRun: r.DryRun}
}

// PrepareRootRequestFromProto converts a root prepare request message.
func PrepareRootRequestFromProto(m *meshrootv1.PrepareRootRequest) (ca.PrepareRootRequest, error) {
	kt, err := keys.ParseKeyType(m.GetKeyType())
	return ca.PrepareRootRequest{KeyType: kt, TTL: FromSeconds(m.GetTtlSeconds()), CrossSign: m.GetCrossSign(), DryRun: m.GetDryRun()}, err
}

// IssueRequestToProto converts an intermediate issue request; a parsed CSR
// is sent as its DER.
func IssueRequestToProto(r ca.IssueRequest) *meshrootv1.IssueIntermediateRequest {
	csr := r.CSRData
	if r.CSR != nil {
		csr = r.CSR.Raw
	}
	return &meshrootv1.IssueIntermediateRequest{
		Cluster: r.Cluster, Csr: csr, TtlSeconds: Seconds(r.TTL), TrustDomainConstraint: r.TrustDomainConstraint,
	}
}

// IssueRequestFromProto converts an intermediate issue request message.
func IssueRequestFromProto(m *meshrootv1.IssueIntermediateRequest) ca.IssueRequest {
	return ca.IssueRequest{
		Cluster: m.GetCluster(), CSRData: m.GetCsr(), TTL: FromSeconds(m.GetTtlSeconds()),
		TrustDomainConstraint: m.GetTrustDomainConstraint(),
	}
}

// IssuedToProto converts an issued intermediate.
func IssuedToProto(out ca.Issued) *meshrootv1.SignIntermediateResponse {
	return &meshrootv1.SignIntermediateResponse{
		CertChain: DERList(out.Chain), TrustedRoots: DERList(out.Bundle.Roots), BundleSequence: out.Bundle.Sequence,
		RootId: out.RootID, Serial: ca.SerialHex(out.Cert.SerialNumber), NotAfter: timestamppb.New(out.Cert.NotAfter),
	}
}

// IssuedFromProto converts a SignIntermediate response back into what the
// authority returned, checking that it parses.
func IssuedFromProto(m *meshrootv1.SignIntermediateResponse, trustDomain string) (ca.Issued, error) {
	chain, err := ParseDERList(m.GetCertChain())
	if err != nil {
		return ca.Issued{}, fmt.Errorf("certificate chain: %w", err)
	}
	roots, err := ParseDERList(m.GetTrustedRoots())
	if err != nil {
		return ca.Issued{}, fmt.Errorf("trusted roots: %w", err)
	}
	if len(chain) == 0 || len(roots) == 0 {
		return ca.Issued{}, fmt.Errorf("the server sent an empty chain or no roots")
	}
	return ca.Issued{
		Cert: chain[0], Chain: chain, RootID: m.GetRootId(),
		Bundle: ca.TrustBundle{TrustDomain: trustDomain, Roots: roots, Sequence: m.GetBundleSequence()},
	}, nil
}

// BundleToProto converts a trust bundle.
func BundleToProto(tb ca.TrustBundle) *meshrootv1.TrustBundle {
	return &meshrootv1.TrustBundle{
		TrustDomain: tb.TrustDomain, Roots: DERList(tb.Roots), Sequence: tb.Sequence,
		RefreshHintSeconds: Seconds(tb.RefreshHint),
	}
}

// BundleFromProto converts a trust bundle message.
func BundleFromProto(m *meshrootv1.TrustBundle) (ca.TrustBundle, error) {
	roots, err := ParseDERList(m.GetRoots())
	if err != nil {
		return ca.TrustBundle{}, fmt.Errorf("trust bundle: %w", err)
	}
	return ca.TrustBundle{
		TrustDomain: m.GetTrustDomain(), Roots: roots, Sequence: m.GetSequence(),
		RefreshHint: FromSeconds(m.GetRefreshHintSeconds()),
	}, nil
}
