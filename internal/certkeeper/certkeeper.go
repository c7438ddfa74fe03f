// Package certkeeper keeps meshroot's self-issued TLS certificates fresh:
// the gRPC server certificate (package server) and the bundle endpoint's
// SVID (package spiffe) both come from a Keeper.
//
// The renewal rule, one for both: a certificate is renewed halfway between
// its issuance and its NotAfter (RenewAt); at once when Reissue is called
// (the active root or the trust bundle changed); and after a failed
// issuance it is retried with backoff, 1 s doubling up to 1 min, while the
// last good certificate keeps being served until it expires. A TLS
// handshake that finds no certificate, or only an expired one, issues one
// itself, at most one attempt per second (a flood of handshakes does not
// become a flood of signatures).
package certkeeper

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// Issue makes a new certificate with its chain and key. The returned
// certificate's Leaf must be set.
type Issue func(ctx context.Context) (*tls.Certificate, error)

// Retry bounds: the first retry after a failure, and the longest wait.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

// handshakeTimeout bounds an issuance a handshake starts.
const handshakeTimeout = 10 * time.Second

// RenewAt is when a certificate issued at issuedAt and valid until
// notAfter is renewed: halfway. Half leaves as much time to retry a failed
// renewal as the certificate has already served, which for the 1 h SVID
// is 30 min of retries.
func RenewAt(issuedAt, notAfter time.Time) time.Time {
	return issuedAt.Add(notAfter.Sub(issuedAt) / 2)
}

// Keeper holds one self-issued certificate and renews it.
type Keeper struct {
	what  string
	issue Issue
	log   *slog.Logger
	now   func() time.Time

	cur     atomic.Pointer[entry]
	mu      sync.Mutex // one issuance at a time; guards lastErr, lastTry
	lastErr error
	lastTry time.Time
	reissue chan struct{}
}

type entry struct {
	cert     *tls.Certificate
	issuedAt time.Time
}

// New returns a keeper of the certificate that issue makes; what names it
// in logs and errors ("server certificate", "bundle endpoint SVID").
func New(what string, issue Issue, log *slog.Logger) *Keeper {
	if log == nil {
		log = slog.Default()
	}
	return &Keeper{what: what, issue: issue, log: log, now: time.Now, reissue: make(chan struct{}, 1),
		lastErr: fmt.Errorf("no %s yet", what)}
}

// SetClock replaces the keeper's clock (tests).
func (k *Keeper) SetClock(now func() time.Time) { k.now = now }

// Current returns the current certificate if it has not expired, else the
// last issuance error. It never issues.
func (k *Keeper) Current() (*tls.Certificate, error) {
	if e := k.cur.Load(); e != nil && k.now().Before(e.cert.Leaf.NotAfter) {
		return e.cert, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return nil, k.lastErr
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// or, when there is none or it has expired (Run is not running or keeps
// failing), a new one, at most one attempt per second.
func (k *Keeper) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if e := k.cur.Load(); e != nil && k.now().Before(e.cert.Leaf.NotAfter) {
		return e.cert, nil
	}
	ctx := context.Background()
	if hello != nil && hello.Context() != nil {
		ctx = hello.Context()
	}
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.cur.Load(); e != nil && k.now().Before(e.cert.Leaf.NotAfter) {
		return e.cert, nil // another handshake just issued one
	}
	if !k.lastTry.IsZero() && k.now().Sub(k.lastTry) < minRetry {
		if k.lastErr != nil {
			return nil, k.lastErr
		}
		return nil, fmt.Errorf("%s: no certificate valid now; the next attempt is within %s", k.what, minRetry)
	}
	e, err := k.issueLocked(ctx)
	if err != nil {
		return nil, err
	}
	return e.cert, nil
}

// Reissue asks Run for a new certificate now.
func (k *Keeper) Reissue() {
	select {
	case k.reissue <- struct{}{}:
	default:
	}
}

// Run issues a certificate, renews it at RenewAt and on Reissue, and
// retries failures with backoff, until ctx ends. It logs each failure
// (wait for a root: Info; anything else: Warn) and returns nil.
func (k *Keeper) Run(ctx context.Context) error {
	backoff := minRetry
	var wait time.Duration
	if e := k.cur.Load(); e != nil {
		wait = RenewAt(e.issuedAt, e.cert.Leaf.NotAfter).Sub(k.now())
	}
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.reissue:
		}
		k.mu.Lock()
		e, err := k.issueLocked(ctx)
		k.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			k.logFailure(err, backoff)
			t.Reset(backoff)
			backoff = min(backoff*2, maxRetry)
			continue
		}
		backoff = minRetry
		t.Reset(max(RenewAt(e.issuedAt, e.cert.Leaf.NotAfter).Sub(k.now()), minRetry))
	}
}

// ErrWaiting marks an issuance that cannot happen yet for an expected
// reason (the server has no active root): the keeper logs it quietly.
var ErrWaiting = errors.New("waiting")

func (k *Keeper) logFailure(err error, retry time.Duration) {
	kept := k.cur.Load() != nil
	if errors.Is(err, ErrWaiting) {
		k.log.Info(k.what+": not issued yet", "reason", err.Error(), "retry_in", retry)
		return
	}
	k.log.Warn(k.what+": issuance failed", "last_still_served", kept, "retry_in", retry, "error", err)
}

func (k *Keeper) issueLocked(ctx context.Context) (*entry, error) {
	issuedAt := k.now()
	k.lastTry = issuedAt
	cert, err := k.issue(ctx)
	if err == nil && (cert == nil || cert.Leaf == nil) {
		err = errors.New("internal error: issued certificate has no parsed leaf")
	}
	if err == nil && (issuedAt.Before(cert.Leaf.NotBefore) || !issuedAt.Before(cert.Leaf.NotAfter)) {
		// Never keep (and serve) a certificate that is not valid now: the
		// authority's clock and ours disagree.
		err = fmt.Errorf("issued certificate is not valid now (valid %s to %s): check the clocks",
			cert.Leaf.NotBefore.UTC().Format(time.RFC3339), cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if err != nil {
		k.lastErr = fmt.Errorf("%s: %w", k.what, err)
		return nil, k.lastErr
	}
	e := &entry{cert: cert, issuedAt: issuedAt}
	k.cur.Store(e)
	return e, nil
}

// Sign makes a P-256 key in memory and has auth (a server CA, see
// ca.Service.ServerAuthority) sign req for it. The result carries the leaf
// and every CA above it except the root, which peers hold in their bundle.
func Sign(auth *ca.Authority, req ca.ServerCertRequest) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	req.PublicKey = key.Public()
	leaf, err := auth.SignServerCert(req)
	if err != nil {
		return nil, err
	}
	chain := auth.Chain()
	raw := [][]byte{leaf.Raw}
	for _, c := range chain[:len(chain)-1] {
		raw = append(raw, c.Raw)
	}
	return &tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf}, nil
}

// Waiting marks err ErrWaiting when it says there is no active root yet.
func Waiting(err error) error {
	if errors.Is(err, ca.ErrNoActiveRoot) {
		return fmt.Errorf("%w for a root: %w", ErrWaiting, err)
	}
	return err
}
