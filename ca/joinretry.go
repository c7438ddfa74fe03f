package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

// JoinRetryGrace is how long after a join token was spent a retry of the
// request that spent it (the same token, a CSR with the same public key)
// is still answered, even when the token itself has expired by then.
const JoinRetryGrace = 10 * time.Minute

// JoinRetryDeadline is when a retry of the request that spent tok stops
// being answered: tok's expiry or JoinRetryGrace after its use, whichever
// is later.
func JoinRetryDeadline(tok store.JoinToken) time.Time {
	deadline := tok.UsedAt.Add(JoinRetryGrace)
	if tok.ExpiresAt.After(deadline) {
		return tok.ExpiresAt
	}
	return deadline
}

// errJoinRaced: another request with the same join token and key recorded
// its issuance first.
var errJoinRaced = errors.New("join token: a concurrent request was issued first")

// KeyHash returns the SHA-256 of csr's SubjectPublicKeyInfo: what a join
// token records of the key it was spent with.
func KeyHash(csr *x509.CertificateRequest) []byte { return sha256Of(csr.RawSubjectPublicKeyInfo) }

// CSRKeyHash parses data (a CSR as IssueRequest.CSRData takes it) and
// returns KeyHash of it, or nil when data is not a CSR.
func CSRKeyHash(data []byte) []byte {
	csr, err := parseCSR(data)
	if err != nil {
		return nil
	}
	return KeyHash(csr)
}

// joinTokenIssued checks the join token that authenticated req against
// req's key and returns the serial already issued for it ("" when none
// yet). A spent token answers only the key it was spent with.
func (s *Service) joinTokenIssued(ctx context.Context, req IssueRequest) (string, error) {
	tok, err := s.store.GetJoinToken(ctx, req.JoinToken)
	if errors.Is(err, store.ErrNotFound) {
		return "", refusef("join token %s no longer exists (expired, or its cluster was removed): create a new one", req.JoinToken)
	}
	if err != nil {
		return "", err
	}
	if tok.Cluster != req.Cluster || tok.UsedAt.IsZero() {
		return "", fmt.Errorf("join token %s: not spent for cluster %s before issuance", req.JoinToken, req.Cluster)
	}
	if !bytes.Equal(tok.KeyHash, KeyHash(req.CSR)) {
		return "", refusef("join token %s was spent with another key: create a new join token", req.JoinToken)
	}
	if d := JoinRetryDeadline(tok); tok.IssuedSerial != "" && !s.now().Before(d) {
		return "", refusef("join token %s was used at %s and its retry window closed at %s: create a new join token",
			req.JoinToken, tok.UsedAt.UTC().Format(time.RFC3339), d.UTC().Format(time.RFC3339))
	}
	return tok.IssuedSerial, nil
}

// reissueJoined answers a retried join (the first request spent the token
// and was issued serial, but its caller gave up before the answer came)
// with the intermediate issued then: the same certificate, from the
// store. Nothing is signed or superseded; the answer is audited.
func (s *Service) reissueJoined(ctx context.Context, actor Actor, req IssueRequest, serial string) (Issued, error) {
	if err := req.CSR.CheckSignature(); err != nil {
		return Issued{}, refusef("CSR signature is invalid: %v", err)
	}
	in, err := s.store.GetIntermediate(ctx, serial)
	if err != nil {
		return Issued{}, fmt.Errorf("intermediate %s issued with join token %s: %w", serial, req.JoinToken, err)
	}
	if in.Cluster != req.Cluster || in.Status != store.IntermediateActive {
		return Issued{}, refusef("the intermediate %s issued with join token %s is %s now: create a new join token", serial, req.JoinToken, in.Status)
	}
	certs, err := ParseCerts(in.CertPEM)
	if err != nil || len(certs) != 1 {
		return Issued{}, fmt.Errorf("intermediate %s: stored certificate: %v", serial, err)
	}
	cert := certs[0]
	if !bytes.Equal(KeyHash(req.CSR), sha256Of(cert.RawSubjectPublicKeyInfo)) {
		return Issued{}, refusef("the intermediate %s issued with join token %s has another key than the CSR: create a new join token", serial, req.JoinToken)
	}
	root, err := s.store.GetRoot(ctx, in.RootID)
	if err != nil {
		return Issued{}, fmt.Errorf("intermediate %s: root %s: %w", serial, in.RootID, err)
	}
	above, err := s.chainAbove(ctx, root, cert)
	if err != nil {
		return Issued{}, err
	}
	bundle, err := s.TrustBundle(ctx)
	if err != nil {
		return Issued{}, err
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// Re-checked where it counts: the token still names this serial
		// and key, and the intermediate is still the active one.
		tok, err := tx.GetJoinToken(ctx, req.JoinToken)
		if err != nil {
			return err
		}
		if tok.IssuedSerial != serial || !bytes.Equal(tok.KeyHash, KeyHash(req.CSR)) {
			return refusef("join token %s changed during the retry: create a new join token", req.JoinToken)
		}
		if cur, err := tx.GetIntermediate(ctx, serial); err != nil {
			return err
		} else if cur.Status != store.IntermediateActive {
			return refusef("the intermediate %s issued with join token %s is %s now: create a new join token", serial, req.JoinToken, cur.Status)
		}
		return s.audit(ctx, tx, actor, "intermediate.issue", req.Cluster, "ok", map[string]any{
			"serial": serial, "root_id": root.ID, "not_after": cert.NotAfter, "bundle_sequence": bundle.Sequence,
			"join_retry": true,
		})
	})
	if err != nil {
		return Issued{}, err
	}
	return Issued{Cert: cert, Chain: append([]*x509.Certificate{cert}, above...), Bundle: bundle, RootID: root.ID}, nil
}

// chainAbove returns every CA above cert, issued under root: the
// authority's chain for a local root, the stored chain for an upstream.
func (s *Service) chainAbove(ctx context.Context, root store.Root, cert *x509.Certificate) ([]*x509.Certificate, error) {
	if !isUpstream(root) {
		auth, err := s.Authority(ctx, root)
		if err != nil {
			return nil, err
		}
		return auth.Chain(), nil
	}
	stored, err := ParseCerts(root.ChainPEM)
	if err != nil || len(stored) == 0 {
		return nil, fmt.Errorf("root %s: stored chain: %v", root.ID, err)
	}
	if _, err := verifyChain(append([]*x509.Certificate{cert}, stored...), stored[len(stored)-1:], s.now()); err != nil {
		return nil, fmt.Errorf("intermediate %s does not verify under the stored chain of root %s: %w", SerialHex(cert.SerialNumber), root.ID, err)
	}
	return stored, nil
}

func sha256Of(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
