package e2e

// End to end with a real step-ca (test/stepcaenv) as the signing
// authority: `root init --upstream step-ca://...`, intermediates that
// openssl and Go accept, the trust-domain name constraint written by the
// provisioner's template, refusals of answers that are not what was asked,
// and a clear error when step-ca is down.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/test/stepcaenv"
)

func stepCARef(c *stepcaenv.CA, provisioner string) string {
	return fmt.Sprintf("step-ca://%s?provisioner=%s&fingerprint=%s", c.Addr, provisioner, c.Fingerprint)
}

func TestRootInStepCA(t *testing.T) {
	requireOpenSSL(t)
	c := stepcaenv.Start(t, stepcaenv.Options{})
	flags := []string{"--step-ca-key-file", c.ProvisionerKeyFile(stepcaenv.Intermediate)}
	ref := stepCARef(c, stepcaenv.Intermediate)
	m := newMeshroot(t)

	m.ok(append(flags, "root", "init", "--trust-domain", trustDomain, "--upstream", ref)...)
	if root := oneActiveRoot(t, m); root.KeyRef != ref {
		t.Errorf("key_ref %q, want %s", root.KeyRef, ref)
	}
	if got := bundleRoot(t, m); !got.Equal(c.Root) {
		t.Fatalf("the trust bundle holds %q, not step-ca's root", got.Subject)
	}

	m.ok("cluster", "add", "east")
	m.ok("cluster", "add", "west")
	eastDir := filepath.Join(t.TempDir(), "east")
	westDir := filepath.Join(t.TempDir(), "west")
	m.ok(issueArgs(flags, "east", eastDir)...) // no disk passphrase needed
	m.ok(issueArgs(flags, "west", westDir)...)
	var clusters []*cacerts
	for _, cl := range []struct{ name, dir string }{{"east", eastDir}, {"west", westDir}} {
		cc := checkIntermediate(t, cl.dir, cl.name, c.Root)
		if err := cc.cert.CheckSignatureFrom(c.Issuer); err != nil {
			t.Errorf("%s: intermediate is not signed by step-ca's intermediate: %v", cl.name, err)
		}
		if len(cc.chain) != 3 || !cc.chain[1].Equal(c.Issuer) {
			t.Errorf("%s: cert-chain.pem holds %d certificates, want [intermediate, step-ca's intermediate, root]", cl.name, len(cc.chain))
		}
		if len(cc.cert.PermittedURIDomains) != 0 {
			t.Errorf("%s: name constraints %v without the policy asking", cl.name, cc.cert.PermittedURIDomains)
		}
		clusters = append(clusters, cc)
	}
	assertClustersTalk(t, clusters[0], clusters[1])
	assertNoPrivateKey(t, m.dataDir)

	t.Run("trust-domain constraint from the policy", func(t *testing.T) {
		m.ok("policy", "set", "--trust-domain-constraint")
		out := filepath.Join(t.TempDir(), "east")
		m.ok(issueArgs(flags, "east", out)...)
		cc := checkIntermediate(t, out, "east", c.Root)
		if !cc.cert.PermittedDNSDomainsCritical || len(cc.cert.PermittedURIDomains) != 1 || cc.cert.PermittedURIDomains[0] != trustDomain ||
			len(cc.cert.ExcludedURIDomains) != 1 || cc.cert.ExcludedURIDomains[0] != "."+trustDomain {
			t.Errorf("name constraints: critical %v, permitted %v, excluded %v; want %s only", cc.cert.PermittedDNSDomainsCritical,
				cc.cert.PermittedURIDomains, cc.cert.ExcludedURIDomains, trustDomain)
		}
		m.ok("policy", "set", "--trust-domain-constraint=false")
	})

	// Through the server: its own TLS certificate comes from a server CA
	// step-ca signs through the server provisioner (default name
	// "meshroot-server"), and the admin API issues.
	serveArgs := append([]string{"--data-dir", m.dataDir, "--san", "127.0.0.1",
		"--step-ca-server-key-file", c.ProvisionerKeyFile(stepcaenv.Server)}, flags...)
	srv := startServe(t, t.TempDir(), serveArgs...)
	srv.waitReady(t)
	checkUpstreamServerCert(t, srv.issuerAddr, c.Root)
	ms := *m
	ms.socket = srv.socket
	out := filepath.Join(t.TempDir(), "east-via-server")
	ms.ok("intermediate", "issue", "--cluster", "east", "--out", out)
	if cc := checkIntermediate(t, out, "east", c.Root); cc.cert.CheckSignatureFrom(c.Issuer) != nil {
		t.Error("intermediate issued through the server is not signed by step-ca")
	}
	srv.stop(t)

	t.Run("server provisioner key missing", func(t *testing.T) {
		// No server provisioner key and no password: the server says
		// which provisioner it needs for its server CA.
		srv := startServe(t, t.TempDir(), append([]string{"--data-dir", m.dataDir, "--san", "127.0.0.1"}, flags...)...)
		want := "server provisioner " + stepcaenv.Server
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(srv.logs(), want) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(srv.logs(), want) {
			t.Errorf("the server's log does not name %q:\n%s", want, srv.logs())
		}
		srv.stop(t)
	})

	t.Run("step-ca down", func(t *testing.T) {
		c.Stop()
		out := filepath.Join(t.TempDir(), "east")
		r := m.run(issueArgs(flags, "east", out)...)
		failedCleanly(t, r, 1, out, "step-ca", "is step-ca running")
	})
}

// TestStepCAAnswersRefused: meshroot refuses what step-ca returns when it
// is not the intermediate asked for, and a chain that cannot hold one.
func TestStepCAAnswersRefused(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true})

	t.Run("provisioner template makes a leaf", func(t *testing.T) {
		flags := []string{"--step-ca-key-file", c.ProvisionerKeyFile(stepcaenv.Leaf)}
		m := newMeshroot(t)
		m.ok(append(flags, "root", "init", "--trust-domain", trustDomain, "--upstream", stepCARef(c, stepcaenv.Leaf))...)
		m.ok("cluster", "add", "east")
		out := filepath.Join(t.TempDir(), "east")
		failedCleanly(t, m.run(issueArgs(flags, "east", out)...), 1, out, "not a CA certificate", "refuses")
	})
	t.Run("template that ignores the constraint", func(t *testing.T) {
		flags := []string{"--step-ca-key-file", c.ProvisionerKeyFile(stepcaenv.Unconstrained)}
		m := newMeshroot(t)
		m.ok(append(flags, "root", "init", "--trust-domain", trustDomain, "--upstream", stepCARef(c, stepcaenv.Unconstrained))...)
		m.ok("cluster", "add", "east")
		m.ok("policy", "set", "--trust-domain-constraint")
		out := filepath.Join(t.TempDir(), "east")
		failedCleanly(t, m.run(issueArgs(flags, "east", out)...), 1, out, "name constraints")
	})
	t.Run("step ca init's path lengths", func(t *testing.T) {
		for _, o := range []stepcaenv.Options{{NoDB: true, RootPathLenOne: true}, {NoDB: true, IssuerPathLenZero: true}} {
			s := stepcaenv.Start(t, o)
			m := newMeshroot(t)
			r := m.run("--step-ca-key-file", s.ProvisionerKeyFile(stepcaenv.Intermediate), "root", "init", "--trust-domain", trustDomain, "--upstream", stepCARef(s, stepcaenv.Intermediate))
			want := 3 // refused by ca's chain check
			if o.IssuerPathLenZero {
				want = 1 // refused when the upstream is opened
			}
			failedCleanly(t, r, want, "", "path length")
			if rows := listRoots(t, m); len(rows) != 0 {
				t.Errorf("a refused root init left roots: %+v", rows)
			}
		}
	})
}

// checkUpstreamServerCert checks the Issuer API's certificate: a leaf for
// 127.0.0.1 that verifies to root through the CAs the server sends.
func checkUpstreamServerCert(t *testing.T, addr string, root *x509.Certificate) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) // verified below
	if err != nil {
		t.Fatalf("TLS to the Issuer API %s: %v", addr, err)
	}
	certs := conn.ConnectionState().PeerCertificates
	conn.Close()
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range certs[1:] {
		inters.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: "127.0.0.1",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("the server's certificate does not verify to step-ca's root for 127.0.0.1: %v", err)
	}
	if err := ca.VerifyServerChain(certs, roots, "127.0.0.1", time.Now()); err != nil {
		t.Errorf("agents would refuse the server: %v", err)
	}
}

// TestStepCAPasswordFile: with --step-ca-password-file and no key file,
// meshroot fetches the provisioner's encrypted key from step-ca.
func TestStepCAPasswordFile(t *testing.T) {
	requireOpenSSL(t)
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true})
	pw := writeFile(t, filepath.Join(t.TempDir(), "password"), []byte(stepcaenv.KeyPassword+"\n"))
	flags := []string{"--step-ca-password-file", pw}
	m := newMeshroot(t)
	m.ok(append(flags, "root", "init", "--trust-domain", trustDomain, "--upstream", stepCARef(c, stepcaenv.Intermediate))...)
	m.ok("cluster", "add", "east")
	out := filepath.Join(t.TempDir(), "east")
	m.ok(issueArgs(flags, "east", out)...)
	checkIntermediate(t, out, "east", c.Root)

	bad := writeFile(t, filepath.Join(t.TempDir(), "bad"), []byte("wrong"))
	out = filepath.Join(t.TempDir(), "east-bad")
	failedCleanly(t, m.run(issueArgs([]string{"--step-ca-password-file", bad}, "east", out)...), 1, out, "step-ca")
}
