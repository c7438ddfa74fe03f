package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// istioSignerPath finds Istio's CA code as a command (test/tools/istiosigner):
// $MESHROOT_ISTIOSIGNER, else the binary test/tools/build.sh put in the
// tool cache for the current sources (the same key: a hash of go.mod,
// go.sum, main.go and the Istio version). "" when it is not built.
func istioSignerPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHROOT_ISTIOSIGNER"); p != "" {
		return p
	}
	tools := filepath.Join("..", "tools")
	script, err := os.ReadFile(filepath.Join(tools, "build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`build_istiosigner\(\) \{[^}]*?local v=(\S+)`).FindSubmatch(script)
	if m == nil {
		t.Fatal("test/tools/build.sh: no Istio version in build_istiosigner")
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(tools, "istiosigner", f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	h.Write([]byte("istio " + string(m[1]) + "\n"))
	cache := os.Getenv("MESHROOT_TOOLS_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "meshroot-test")
	}
	p := filepath.Join(cache, "bin", "istiosigner-"+hex.EncodeToString(h.Sum(nil))[:16], "istiosigner")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// verifyBoth verifies leaf under the cacerts folder with Go's verifier (for
// name) and with `openssl verify -x509_strict`, and reports each result.
func verifyBoth(t *testing.T, c *cacerts, leaf *x509.Certificate, name string) (goErr, sslErr error, sslOut string) {
	t.Helper()
	inters := x509.NewCertPool()
	for _, ic := range c.chain {
		inters.AddCert(ic)
	}
	_, goErr = leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.rootPool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	leafFile := writeFile(t, filepath.Join(t.TempDir(), "leaf.pem"), pemCert(leaf))
	out, sslErr := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", filepath.Join(c.dir, "root-cert.pem"),
		"-untrusted", filepath.Join(c.dir, "cert-chain.pem"), leafFile).CombinedOutput()
	return goErr, sslErr, string(out)
}

// istiodNames are istiod's serving names (pilot/pkg/bootstrap getDNSNames)
// for namespace istio-system and revision canary.
var istiodNames = []string{"istio-pilot.istio-system.svc", "istiod-canary.istio-system.svc", "istiod-remote.istio-system.svc", "istiod.istio-system.svc"}

// TestIstiodServingCertUnderNameConstraints: a cluster intermediate as
// issued by default carries name constraints under which istiod's own
// serving certificate, signed by Istio's CA code from the plugged-in
// cacerts, verifies (Go, openssl -x509_strict), while a certificate for the
// meshroot server's name, or an IP address, minted with the same cluster
// key does not. A cluster registered with --permit-dns gets its custom
// istiod host.
func TestIstiodServingCertUnderNameConstraints(t *testing.T) {
	requireOpenSSL(t)
	m := newMeshroot(t)
	m.initRoot()
	east := loadCACerts(t, m.issue("east", true))

	t.Run("istiod serving certificate from Istio's CA code", func(t *testing.T) {
		signer := istioSignerPath(t)
		if signer == "" {
			t.Skip("istiosigner for the current sources is not built: run test/tools/build.sh istiosigner, or set MESHROOT_ISTIOSIGNER")
		}
		out := filepath.Join(t.TempDir(), "istiod.pem")
		if b, err := exec.Command(signer, "-cacerts", east.dir, "-dns-names", strings.Join(istiodNames, ","), "-ttl", "1h", "-out", out).CombinedOutput(); err != nil {
			t.Fatalf("istiosigner: %v\n%s", err, b)
		}
		certs := readCerts(t, out)
		leaf := certs[0]
		if len(leaf.DNSNames) != len(istiodNames) || leaf.IsCA {
			t.Fatalf("Istio signed %v (CA %v), want the DNS names %v", leaf.DNSNames, leaf.IsCA, istiodNames)
		}
		for _, name := range istiodNames {
			if goErr, sslErr, sslOut := verifyBoth(t, east, leaf, name); goErr != nil || sslErr != nil {
				t.Errorf("istiod's serving certificate for %s: Go %v, openssl %v\n%s", name, goErr, sslErr, sslOut)
			}
		}
	})

	forge := func(t *testing.T, c *cacerts, dns []string, ips []net.IP) *x509.Certificate {
		key := newP256(t)
		tmpl := &x509.Certificate{
			SerialNumber: randSerial(t), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			DNSNames: dns, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		return leaf
	}
	t.Run("server name minted with the cluster key", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			dns  []string
			ips  []net.IP
		}{
			{"meshroot.example.com", []string{"meshroot.example.com"}, nil},
			{"localhost", []string{"localhost"}, nil},
			{"127.0.0.1", nil, []net.IP{net.ParseIP("127.0.0.1")}},
			{"meshroot.meshroot.svc.cluster.local", []string{"meshroot.meshroot.svc.cluster.local"}, nil},
		} {
			goErr, sslErr, _ := verifyBoth(t, east, forge(t, east, tc.dns, tc.ips), tc.name)
			if goErr == nil || sslErr == nil {
				t.Errorf("a certificate for %s minted with the cluster key verifies: Go %v, openssl %v", tc.name, goErr, sslErr)
			}
		}
	})

	t.Run("names registered with the cluster", func(t *testing.T) {
		m.ok("cluster", "add", "west", "--permit-dns", "istiod.mesh.example", "--permit-ip", "10.0.0.0/8")
		west := loadCACerts(t, m.issue("west", false))
		for _, tc := range []struct {
			name string
			dns  []string
			ips  []net.IP
			ok   bool
		}{
			{"istiod.mesh.example", []string{"istiod.mesh.example"}, nil, true},
			{"10.1.2.3", []string{"istiod.istio-system.svc"}, []net.IP{net.ParseIP("10.1.2.3")}, true},
			{"meshroot.example.com", []string{"meshroot.example.com"}, nil, false},
			{"192.168.0.1", nil, []net.IP{net.ParseIP("192.168.0.1")}, false},
		} {
			goErr, sslErr, out := verifyBoth(t, west, forge(t, west, tc.dns, tc.ips), tc.name)
			if (goErr == nil) != tc.ok || (sslErr == nil) != tc.ok {
				t.Errorf("%s under west: Go %v, openssl %v, want ok=%v\n%s", tc.name, goErr, sslErr, tc.ok, out)
			}
		}
	})
}
