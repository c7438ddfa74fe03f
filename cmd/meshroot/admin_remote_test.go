package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshroot/meshroot/ca"
)

// The CLI reaches a server's remote admin listener with --server and
// --admin-cert: a viewer lists and is refused a change (exit 3), an
// operator changes and is the audit row's actor.
func TestRemoteAdminCLI(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "mr") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "admin.sock")
	var logs syncBuffer
	cmd := newRootCmd()
	cmd.SetArgs([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--socket", socket, "--insecure-plaintext-key",
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off", "--admin-listen", "127.0.0.1:0"})
	cmd.SetErr(&logs)
	cmd.SetOut(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	addrRE := regexp.MustCompile(`"admin_listen":"([^"]+)"`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; time.Sleep(50 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("the server never logged its admin_listen address:\n%s", logs.String())
		}
	}
	cliOK(t, "root", "init", "--trust-domain", testTD, "--socket", socket)
	cliOK(t, "cluster", "add", "east", "--socket", socket)
	viewer, operator := filepath.Join(dir, "vera"), filepath.Join(dir, "otto")
	cliOK(t, "admin", "cert", "issue", "vera", "--role", "viewer", "--ttl", "1h", "--out", viewer, "--socket", socket)
	cliOK(t, "admin", "cert", "issue", "otto", "--role", "operator", "--out", operator, "--socket", socket)
	if fi, err := os.Stat(filepath.Join(viewer, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v, mode %v; want 0600", err, fi.Mode())
	}
	if r := cli(t, "admin", "cert", "issue", "x", "--role", "root", "--out", viewer, "--socket", socket); r.code != exitUsage {
		t.Errorf("--role root: exit %d, want %d", r.code, exitUsage)
	}

	// The server's certificate is not ready until the first root exists.
	var list cliResult
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if list = cli(t, "cluster", "list", "-o", "json", "--server", addr, "--admin-cert", viewer); list.code == exitOK || time.Now().After(deadline) {
			break
		}
	}
	if list.code != exitOK || !strings.Contains(list.stdout, `"east"`) {
		t.Fatalf("viewer cluster list: exit %d\n%s%s", list.code, list.stdout, list.stderr)
	}
	if r := cli(t, "cluster", "add", "north", "--server", addr, "--admin-cert", viewer); r.code != exitRefused || !strings.Contains(r.stderr, "viewer") {
		t.Errorf("viewer cluster add: exit %d, want %d (refused)\n%s", r.code, exitRefused, r.stderr)
	}
	cliOK(t, "cluster", "add", "north", "--server", addr, "--admin-cert", operator)
	var entries []map[string]any
	if err := json.Unmarshal([]byte(cliOK(t, "audit", "list", "-o", "json", "--socket", socket).stdout), &entries); err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1]
	if last["actor"] != "admin-cert:otto(operator)" || last["action"] != "cluster.add" {
		t.Errorf("last audit row %v; want cluster.add by admin-cert:otto(operator)", last)
	}
	// The list shows both, and revocation locks the viewer out (exit 3).
	certs := decodeArray(t, "admin cert list", cliOK(t, "admin", "cert", "list", "-o", "json", "--server", addr, "--admin-cert", operator).stdout,
		"serial", "name", "role", "issued_at", "not_after", "revoked_at")
	if len(certs) != 2 {
		t.Fatalf("admin cert list: %v", certs)
	}
	cliOK(t, "admin", "cert", "revoke", certs[0]["serial"].(string), "--socket", socket)
	if r := cli(t, "cluster", "list", "--server", addr, "--admin-cert", viewer); r.code != exitRefused || !strings.Contains(r.stderr, "revoked") {
		t.Errorf("revoked viewer: exit %d, want %d\n%s", r.code, exitRefused, r.stderr)
	}
	if r := cli(t, "cluster", "list", "--server", addr, "--admin-cert", operator, "--data-dir", filepath.Join(dir, "data")); r.code != exitUsage {
		t.Errorf("--server with --data-dir: exit %d, want %d", r.code, exitUsage)
	}
	if r := cli(t, "cluster", "list", "--server", addr); r.code != exitUsage {
		t.Errorf("--server without --admin-cert: exit %d, want %d", r.code, exitUsage)
	}
}

// The CLI refuses a remote admin server whose certificate chains to the
// pinned trust bundle but not through meshroot's server CA, before it
// sends anything.
func TestRemoteAdminCLIRefusesServerNotFromServerCA(t *testing.T) {
	clearEnv(t)
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "a root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "impostor"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, root, leafKey.Public(), rootKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan struct{}, 16)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}},
		ClientAuth:   tls.RequestClientCert,
		VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error {
			asked <- struct{}{} // the client finished its side of the handshake
			return nil
		},
	})))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	creds := t.TempDir()
	if err := writeAdminCreds(creds, rootKey, []*x509.Certificate{root}, []*x509.Certificate{root}); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "cluster", "list", "--server", ln.Addr().String(), "--admin-cert", creds)
	if r.code == exitOK || !strings.Contains(r.stderr, ca.ErrNotServerCA.Error()) {
		t.Fatalf("impostor server: exit %d\n%s; want a refusal naming %q", r.code, r.stderr, ca.ErrNotServerCA)
	}
	if len(asked) != 0 {
		t.Errorf("the CLI completed a handshake with the impostor (it would have sent a call)")
	}
}
