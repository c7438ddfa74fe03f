package certkeeper

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

func selfSigned(t *testing.T, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestHandshakeIssuanceIsRateLimited: handshakes that find no certificate
// start at most one issuance per second, and Current never issues.
func TestHandshakeIssuanceIsRateLimited(t *testing.T) {
	var calls atomic.Int32
	fail := errors.New("signer down")
	k := New("test certificate", func(context.Context) (*tls.Certificate, error) {
		calls.Add(1)
		return nil, fail
	}, nil)
	now := time.Now()
	k.SetClock(func() time.Time { return now })
	if _, err := k.Current(); err == nil || calls.Load() != 0 {
		t.Fatalf("Current: %v after %d issuances, want an error and none", err, calls.Load())
	}
	for range 10 {
		if _, err := k.GetCertificate(nil); !errors.Is(err, fail) {
			t.Fatalf("GetCertificate: %v, want the issuance error", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("10 handshakes within a second made %d issuances, want 1", n)
	}
	now = now.Add(1100 * time.Millisecond)
	_, _ = k.GetCertificate(nil)
	if n := calls.Load(); n != 2 {
		t.Fatalf("a handshake a second later made %d issuances in all, want 2", n)
	}
}

// TestRunRenewsAtHalfLife: Run renews at RenewAt and serves the new one.
func TestRunRenewsAtHalfLife(t *testing.T) {
	var calls atomic.Int32
	k := New("test certificate", func(context.Context) (*tls.Certificate, error) {
		calls.Add(1)
		return selfSigned(t, time.Now().Add(2*time.Second)), nil
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	go func() { _ = k.Run(ctx) }()
	for calls.Load() < 2 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("no renewal within 5s of a 2s certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("renewed after %s, want about half of 2s", d)
	}
	if got := RenewAt(start, start.Add(time.Hour)); !got.Equal(start.Add(30 * time.Minute)) {
		t.Fatalf("RenewAt: %s after issuance, want 30m", got.Sub(start))
	}
}

func TestWaitingMarksNoRoot(t *testing.T) {
	if err := Waiting(fmt.Errorf("x: %w", ca.ErrNoActiveRoot)); !errors.Is(err, ErrWaiting) || !errors.Is(err, ca.ErrNoActiveRoot) {
		t.Fatalf("Waiting(no root) = %v", err)
	}
	if err := Waiting(errors.New("other")); errors.Is(err, ErrWaiting) {
		t.Fatal("another error was marked as waiting")
	}
}

// TestNeverServesACertificateNotValidNow: an issuer whose clock is behind
// (it signed a certificate that has already expired) is an issuance
// failure, and a handshake in the retry window gets an error, never a nil
// certificate without one (which crypto/tls turns into "internal error").
func TestNeverServesACertificateNotValidNow(t *testing.T) {
	k := New("test certificate", func(context.Context) (*tls.Certificate, error) {
		return selfSigned(t, time.Now().Add(-time.Hour)), nil
	}, nil)
	for i := range 3 {
		cert, err := k.GetCertificate(nil)
		if err == nil || cert != nil {
			t.Fatalf("handshake %d: certificate %v, error %v; want no certificate and an error", i, cert != nil, err)
		}
	}
	if _, err := k.Current(); err == nil {
		t.Fatal("Current serves an expired certificate")
	}
}
