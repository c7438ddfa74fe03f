package postgres

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// withParams adds query parameters to a URL DSN.
func withParams(dsn, params string) string {
	base, _, _ := strings.Cut(dsn, "?")
	return base + "?" + params
}

// sslOn reports whether the test server offers TLS.
func sslOn(t *testing.T, dsn string) bool {
	var v string
	if err := rawConn(t, dsn).QueryRow(t.Context(), `SHOW ssl`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v == "on"
}

// sslmode=require: the store's connections are encrypted when the server
// offers TLS, and Open fails saying what to do when it does not.
func TestTLSRequire(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := open(t.Context(), withParams(dsn, "sslmode=require"))
	if !sslOn(t, dsn) {
		if err == nil || !strings.Contains(err.Error(), "does not offer it") {
			t.Fatalf("Open(sslmode=require) against a server without TLS = %v, want a refusal naming sslmode", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Open(sslmode=require): %v", err)
	}
	defer s.Close()
	var encrypted bool
	if err := s.pool.QueryRow(t.Context(), `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&encrypted); err != nil || !encrypted {
		t.Fatalf("store connection encrypted = %v, %v; want true", encrypted, err)
	}
}

// sslmode=verify-ca with a CA that did not sign the server's certificate
// (the CA file comes through the DSN): Open fails, naming sslrootcert.
func TestTLSWrongCARefused(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), withParams(dsn, "sslmode=verify-ca&sslrootcert="+caFile))
	if err == nil {
		t.Fatal("Open with a CA that did not sign the server's certificate succeeded")
	}
	t.Log(err)
	want := "sslrootcert"
	if !sslOn(t, dsn) {
		want = "does not offer it"
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Open error %q does not say what to do (%q)", err, want)
	}
}

// A server that refuses TLS (it answers the SSLRequest with 'N', as a
// PostgreSQL server with ssl = off does) and a DSN that requires it: Open
// fails clearly, without falling back to plaintext.
func TestTLSRefusedByServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 8) // SSLRequest: length 8, code 80877103
			if _, err := c.Read(buf); err == nil {
				c.Write([]byte{'N'})
			}
			time.Sleep(100 * time.Millisecond) // a plaintext startup would arrive here
			c.Close()
		}
	}()
	_, err = Open(t.Context(), "postgres://postgres@"+ln.Addr().String()+"/x?sslmode=require&connect_timeout=5")
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "server refused TLS connection") || !strings.Contains(err.Error(), "does not offer it") {
		t.Fatalf("Open(sslmode=require) against a server refusing TLS = %v, want a clear refusal", err)
	}
}

// An invalid DSN is refused without echoing it (it may hold a password).
func TestInvalidDSNNotEchoed(t *testing.T) {
	_, err := Open(t.Context(), "postgres://user:s3cret@host:notaport/db")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open(invalid DSN) = %v, want an error without the password", err)
	}
	if got := Redact("postgres://user:s3cret@db.example:5433/meshroot?sslmode=verify-full"); got != "postgres://user@db.example:5433/meshroot" {
		t.Errorf("Redact = %q", got)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	openTest(t, dsn).Close()
	if _, err := rawConn(t, dsn).Exec(t.Context(), `INSERT INTO schema_migrations VALUES (999, 'from the future', '')`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), dsn); err == nil || !strings.Contains(err.Error(), "newer than this meshroot supports") {
		t.Fatalf("Open on a newer schema = %v, want a refusal", err)
	}
}

// The triggers stop edits of the audit log; someone who drops them is
// caught by the chain.
func TestAuditTamperDetected(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	for range 5 {
		if err := s.Update(ctx, func(tx store.Tx) error {
			_, err := tx.AppendAudit(ctx, store.AuditEntry{Actor: "test", Action: "test.append", Result: "ok", Details: "{}"})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	raw := rawConn(t, dsn)
	for _, q := range []string{`UPDATE audit_log SET details = '' WHERE seq = 1`, `DELETE FROM audit_log WHERE seq = 5`, `TRUNCATE audit_log`} {
		if _, err := raw.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Fatalf("%s with the triggers in place: %v, want an append-only error", q, err)
		}
	}
	if _, err := raw.Exec(ctx, `ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE audit_log SET details = '{"forged":true}' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	var ce *store.ChainError
	if err := s.VerifyAudit(ctx); !errors.As(err, &ce) || ce.Seq != 3 {
		t.Fatalf("VerifyAudit after an edit = %v, want a chain error at seq 3", err)
	}
}

// selfSignedPEM returns a CA certificate that signed nothing.
func selfSignedPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unrelated CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
