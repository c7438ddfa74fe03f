// Package pgtest gives each test its own PostgreSQL database on a real
// server: created empty, named meshroot_test_<random>, and dropped when the
// test ends.
//
// The server is the one at 127.0.0.1:5432, user postgres, trust
// authentication, unless MESHROOT_TEST_POSTGRES names the DSN of another
// server's maintenance database. A test that cannot reach it fails, saying
// what it needs: it is never skipped silently.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable that overrides DefaultAdminDSN.
const EnvDSN = "MESHROOT_TEST_POSTGRES"

// DefaultAdminDSN is the maintenance database of the local test server.
const DefaultAdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Prefix starts the name of every database NewDatabase creates.
const Prefix = "meshroot_test_"

// AdminDSN returns the DSN of the maintenance database tests connect to.
func AdminDSN() string {
	if v := os.Getenv(EnvDSN); v != "" {
		return v
	}
	return DefaultAdminDSN
}

// Need fails t, saying what the tests need, unless the server answers.
func Need(t testing.TB) {
	t.Helper()
	conn := connectAdmin(t)
	conn.Close(context.Background())
}

// NewDatabase creates an empty database for t and returns its DSN. The
// database is dropped (its connections terminated) when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	conn := connectAdmin(t)
	defer conn.Close(context.Background())
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := Prefix + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v (the test user must be allowed to create databases)", name, err)
	}
	t.Cleanup(func() { drop(t, name) })
	dsn, err := WithDatabase(AdminDSN(), name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// WithDatabase returns dsn (a URL or key=value DSN) pointing at database
// name instead.
func WithDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("pgtest: %s is not a valid URL: %w", EnvDSN, err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil
}

// drop removes database name, terminating connections still open to it.
func drop(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDSN())
	if err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
	}
}

// connectAdmin connects to the maintenance database or fails t with what
// the tests need.
func connectAdmin(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDSN())
	if err != nil {
		t.Fatalf("pgtest: cannot reach PostgreSQL at %s: %v\n"+
			"These tests need a PostgreSQL server (13 or newer) on 127.0.0.1:5432 that lets user postgres in without a password (trust authentication) "+
			"and create databases. On Debian: apt-get install postgresql, then pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start. "+
			"Or set %s to the DSN of another server's maintenance database.", redact(AdminDSN()), err, EnvDSN)
	}
	return conn
}

// redact drops a password from a URL DSN for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}
