package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshroot/meshroot/store"
)

// PEM block types of an audit anchor file.
const (
	pemAnchor          = "MESHROOT AUDIT ANCHOR"
	pemAnchorSignature = "MESHROOT AUDIT ANCHOR SIGNATURE"
	anchorVersion      = "meshroot-audit-anchor v1"
	// MaxAnchorSize bounds an audit anchor file.
	MaxAnchorSize  = 64 << 10
	maxAnchorChain = 8
)

// AuditAnchor is a signed statement of the audit log's head: "the entry with
// sequence Seq has hash Hash", made at Time and signed with the key of the
// active root RootID. Kept outside the database, it detects a database file
// that was rolled back to an older copy, which the hash chain alone cannot:
// an older copy is a consistent chain too.
type AuditAnchor struct {
	TrustDomain string
	RootID      string
	Seq         int64
	Hash        string
	Time        time.Time
	// Chain is the signing certificate first, then every CA above it,
	// ending with the root.
	Chain     []*x509.Certificate
	Algorithm x509.SignatureAlgorithm
	Signature []byte
	// statement is the signed text.
	statement []byte
}

// AnchorError is an anchor that the audit log contradicts: the log was
// rolled back below the anchored entry, or that entry was rewritten.
type AnchorError struct{ Reason string }

func (e *AnchorError) Error() string { return e.Reason }

// anchorStatement is the text an anchor signs.
func anchorStatement(td, rootID string, seq int64, hash string, at time.Time) []byte {
	return fmt.Appendf(nil, "%s\ntrust-domain: %s\nroot: %s\nseq: %d\nhash: %s\ntime: %s\n",
		anchorVersion, td, rootID, seq, hash, at.UTC().Format(time.RFC3339Nano))
}

// AnchorAudit appends an "audit.anchor" row to the audit log and returns,
// PEM encoded, an AuditAnchor for that row (the head of the log), signed
// with the active root's signing key. Store the result away from the
// database and check it later with VerifyAuditAnchor.
func (s *Service) AnchorAudit(ctx context.Context) ([]byte, error) {
	actor := ActorFrom(ctx)
	out, err := s.anchorAudit(ctx, actor)
	if err != nil {
		return nil, s.auditRefusal(ctx, actor, "audit.anchor", "", err)
	}
	return out, nil
}

func (s *Service) anchorAudit(ctx context.Context, actor Actor) ([]byte, error) {
	root, err := s.ActiveRoot(ctx)
	if err != nil {
		return nil, err
	}
	if isUpstream(root) {
		return nil, refusef("audit anchors are signed with the active root's key, which an upstream signing authority keeps: not available")
	}
	auth, err := s.Authority(ctx, root)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if r, err := tx.GetRoot(ctx, root.ID); err != nil {
			return err
		} else if r.State != store.RootActive {
			return refusef("root %s stopped being active: retry", root.ID)
		}
		at := s.now().UTC()
		details, err := json.Marshal(map[string]any{"root_id": root.ID})
		if err != nil {
			return err
		}
		e, err := tx.AppendAudit(ctx, store.AuditEntry{
			Time: at, Actor: string(actor), Action: "audit.anchor", Target: root.ID, Result: "ok", Details: string(details),
		})
		if err != nil {
			return err
		}
		a := AuditAnchor{TrustDomain: root.TrustDomain, RootID: root.ID, Seq: e.Seq, Hash: e.Hash, Time: at, Chain: auth.Chain()}
		a.statement = anchorStatement(a.TrustDomain, a.RootID, a.Seq, a.Hash, a.Time)
		if a.Algorithm, a.Signature, err = signStatement(auth.signer, a.Chain[0], a.statement); err != nil {
			return err
		}
		out = a.Encode()
		return nil
	})
	return out, err
}

// signStatement signs msg with signer (the key of cert) and checks the
// signature against cert before returning it.
func signStatement(signer crypto.Signer, cert *x509.Certificate, msg []byte) (x509.SignatureAlgorithm, []byte, error) {
	var algo x509.SignatureAlgorithm
	var h crypto.Hash
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P384():
			algo, h = x509.ECDSAWithSHA384, crypto.SHA384
		case elliptic.P521():
			algo, h = x509.ECDSAWithSHA512, crypto.SHA512
		default:
			algo, h = x509.ECDSAWithSHA256, crypto.SHA256
		}
	case *rsa.PublicKey:
		algo, h = x509.SHA256WithRSA, crypto.SHA256
	default:
		return 0, nil, fmt.Errorf("sign audit anchor: key type %T is not supported", pub)
	}
	d := h.New()
	d.Write(msg)
	sig, err := signer.Sign(rand.Reader, d.Sum(nil), h)
	if err != nil {
		return 0, nil, fmt.Errorf("sign audit anchor: %w", err)
	}
	if err := cert.CheckSignature(algo, msg, sig); err != nil {
		return 0, nil, fmt.Errorf("sign audit anchor: the signature does not verify against the signing certificate: %w", err)
	}
	return algo, sig, nil
}

// Encode returns the anchor as PEM: the statement (with its fields repeated
// as headers for the reader), the signature, and the signing chain.
func (a AuditAnchor) Encode() []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: pemAnchor, Headers: map[string]string{
		"Seq": strconv.FormatInt(a.Seq, 10), "Hash": a.Hash, "Time": a.Time.UTC().Format(time.RFC3339), "Root": a.RootID,
	}, Bytes: a.statement})
	_ = pem.Encode(&b, &pem.Block{Type: pemAnchorSignature, Headers: map[string]string{"Algorithm": a.Algorithm.String()}, Bytes: a.Signature})
	b.Write(EncodeCerts(a.Chain))
	return b.Bytes()
}

// ParseAuditAnchor reads an anchor made by AnchorAudit. It checks the form
// only; VerifyAuditAnchor checks the signature and the log.
func ParseAuditAnchor(data []byte) (AuditAnchor, error) {
	if len(data) > MaxAnchorSize {
		return AuditAnchor{}, fmt.Errorf("audit anchor is %d bytes: at most %d", len(data), MaxAnchorSize)
	}
	var a AuditAnchor
	var haveStatement, haveSig bool
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case pemAnchor:
			if haveStatement {
				return AuditAnchor{}, errors.New("audit anchor has two statements")
			}
			haveStatement, a.statement = true, blk.Bytes
		case pemAnchorSignature:
			if haveSig {
				return AuditAnchor{}, errors.New("audit anchor has two signatures")
			}
			haveSig, a.Signature = true, blk.Bytes
			a.Algorithm = parseSignatureAlgorithm(blk.Headers["Algorithm"])
		case "CERTIFICATE":
			if len(a.Chain) >= maxAnchorChain {
				return AuditAnchor{}, fmt.Errorf("audit anchor chain has more than %d certificates", maxAnchorChain)
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return AuditAnchor{}, fmt.Errorf("audit anchor certificate %d: %w", len(a.Chain)+1, err)
			}
			a.Chain = append(a.Chain, c)
		default:
			return AuditAnchor{}, fmt.Errorf("audit anchor: unexpected PEM block %q", blk.Type)
		}
	}
	switch {
	case !haveStatement || !haveSig || len(a.Chain) == 0:
		return AuditAnchor{}, fmt.Errorf("not an audit anchor: want a %s block, a %s block and the signing certificates (make one with the audit anchor command)", pemAnchor, pemAnchorSignature)
	case a.Algorithm == x509.UnknownSignatureAlgorithm:
		return AuditAnchor{}, errors.New("audit anchor: the signature names no known algorithm")
	}
	if err := a.parseStatement(); err != nil {
		return AuditAnchor{}, err
	}
	return a, nil
}

func parseSignatureAlgorithm(name string) x509.SignatureAlgorithm {
	for _, algo := range []x509.SignatureAlgorithm{x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512, x509.SHA256WithRSA} {
		if algo.String() == name {
			return algo
		}
	}
	return x509.UnknownSignatureAlgorithm
}

// parseStatement fills the fields from the signed statement, which must be
// exactly what anchorStatement writes for them.
func (a *AuditAnchor) parseStatement() error {
	bad := func(why string) error { return fmt.Errorf("audit anchor statement is malformed: %s", why) }
	lines := strings.Split(string(a.statement), "\n")
	if len(lines) != 7 || lines[0] != anchorVersion || lines[6] != "" {
		return bad("want " + anchorVersion + " and five fields")
	}
	field := func(i int, name string) (string, error) {
		v, ok := strings.CutPrefix(lines[i], name+": ")
		if !ok {
			return "", bad("line " + strconv.Itoa(i+1) + " is not " + name)
		}
		return v, nil
	}
	var err error
	var seq, at string
	if a.TrustDomain, err = field(1, "trust-domain"); err != nil {
		return err
	}
	if a.RootID, err = field(2, "root"); err != nil {
		return err
	}
	if seq, err = field(3, "seq"); err != nil {
		return err
	}
	if a.Hash, err = field(4, "hash"); err != nil {
		return err
	}
	if at, err = field(5, "time"); err != nil {
		return err
	}
	if a.Seq, err = strconv.ParseInt(seq, 10, 64); err != nil || a.Seq < 1 {
		return bad("seq " + strconv.Quote(seq) + " is not a positive number")
	}
	if a.Time, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return bad("time " + strconv.Quote(at) + " is not RFC 3339")
	}
	if !bytes.Equal(anchorStatement(a.TrustDomain, a.RootID, a.Seq, a.Hash, a.Time), a.statement) {
		return bad("fields are not in canonical form")
	}
	return nil
}

// VerifyAuditAnchor checks anchor a against the trust bundle's roots and the
// audit log. The signature must verify with the signing certificate, whose
// chain (at the anchor's time) ends at the anchor's root, one of roots.
// Then lookup, which returns the log's entry with a sequence number
// (found false when the log has none), must show the anchored entry with
// the anchored hash: an *AnchorError says the log was rolled back below it
// or rewritten. VerifyAuditAnchor does not check the chain itself; verify
// the log's hash chain first.
func VerifyAuditAnchor(a AuditAnchor, roots []*x509.Certificate, lookup func(seq int64) (store.AuditEntry, bool, error)) error {
	if err := a.Chain[0].CheckSignature(a.Algorithm, a.statement, a.Signature); err != nil {
		return &AnchorError{Reason: fmt.Sprintf("audit anchor for entry %d: the signature does not verify with its signing certificate (the anchor was altered): %v", a.Seq, err)}
	}
	top := a.Chain[len(a.Chain)-1]
	if RootID(top) != a.RootID {
		return &AnchorError{Reason: fmt.Sprintf("audit anchor for entry %d: its chain ends at root %s, not the root %s it names (the anchor was altered)", a.Seq, RootID(top), a.RootID)}
	}
	var inBundle bool
	for _, r := range roots {
		inBundle = inBundle || bytes.Equal(r.Raw, top.Raw)
	}
	if !inBundle {
		return fmt.Errorf("audit anchor for entry %d was signed under root %s, which is not in the trust bundle now: it cannot be checked; take a new anchor after each root rotation", a.Seq, a.RootID)
	}
	if _, err := verifyChain(a.Chain, []*x509.Certificate{top}, a.Time); err != nil {
		return &AnchorError{Reason: fmt.Sprintf("audit anchor for entry %d: its signing chain does not verify at %s: %v", a.Seq, a.Time.UTC().Format(time.RFC3339), err)}
	}
	e, found, err := lookup(a.Seq)
	if err != nil {
		return fmt.Errorf("audit anchor for entry %d: read the audit log: %w", a.Seq, err)
	}
	if !found {
		return &AnchorError{Reason: fmt.Sprintf("audit log rolled back: the anchor of %s names entry %d with hash %s, but the log no longer holds that entry (it was truncated or the database replaced by an older copy)",
			a.Time.UTC().Format(time.RFC3339), a.Seq, a.Hash)}
	}
	if e.Hash != a.Hash {
		return &AnchorError{Reason: fmt.Sprintf("audit log rewritten: the anchor of %s names entry %d with hash %s, but the log's entry %d has hash %s",
			a.Time.UTC().Format(time.RFC3339), a.Seq, a.Hash, a.Seq, e.Hash)}
	}
	return nil
}
