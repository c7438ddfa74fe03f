// The kubernetes.io/tls layout of cacerts (agent --format tls: tls.crt,
// tls.key, ca.crt) loaded by a real istiod (issue 11 item 5).

package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshroot/meshroot/test/kube/istiodenv"
	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// tlsCACerts is a cacerts Secret in the kubernetes.io/tls layout.
type tlsCACerts struct {
	inter  *x509.Certificate // the first of tls.crt
	chain  []*x509.Certificate
	roots  []*x509.Certificate // ca.crt
	serial string
	seq    uint64
}

// mustTLSCACerts reads istio-system/cacerts and checks it as the tls
// layout: type kubernetes.io/tls, tls.crt (the intermediate, no root),
// tls.key matching it, ca.crt the roots it verifies to, and none of the
// istio layout's files.
func mustTLSCACerts(t testing.TB, c *kubeenv.Cluster) *tlsCACerts {
	t.Helper()
	sec := getSecret(t, c, meshNS, cacertsName)
	if sec == nil {
		t.Fatal("no cacerts Secret")
	}
	if sec.Type != corev1.SecretTypeTLS {
		t.Fatalf("cacerts has type %q, want %s", sec.Type, corev1.SecretTypeTLS)
	}
	for _, k := range cacertsKeys {
		if _, ok := sec.Data[k]; ok {
			t.Fatalf("cacerts in the tls layout holds %s of the istio layout (keys %v)", k, keysOf(sec.Data))
		}
	}
	if _, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"]); err != nil {
		t.Fatalf("tls.crt and tls.key: %v", err)
	}
	cc := &tlsCACerts{}
	var err error
	if cc.chain, err = parseCerts(sec.Data["tls.crt"]); err != nil || len(cc.chain) == 0 {
		t.Fatalf("tls.crt: %d certificates, %v", len(cc.chain), err)
	}
	if cc.roots, err = parseCerts(sec.Data["ca.crt"]); err != nil || len(cc.roots) == 0 {
		t.Fatalf("ca.crt: %d certificates, %v", len(cc.roots), err)
	}
	cc.inter = cc.chain[0]
	for _, c := range cc.chain {
		if containsCert(cc.roots, c) {
			t.Fatalf("tls.crt holds root %s: istiod appends ca.crt itself", rootID(c))
		}
	}
	inter := x509.NewCertPool()
	for _, c := range cc.chain[1:] {
		inter.AddCert(c)
	}
	if _, err := cc.inter.Verify(x509.VerifyOptions{Roots: poolOf(cc.roots), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("tls.crt does not verify to ca.crt: %v", err)
	}
	cc.serial = fmt.Sprintf("%x", cc.inter.SerialNumber)
	if cc.seq, err = strconv.ParseUint(sec.Annotations[annBundleSeq], 10, 64); err != nil {
		t.Fatalf("annotation %s: %v", annBundleSeq, err)
	}
	return cc
}

// TestIstiodTLSLayout: an agent daemon with --format tls writes cacerts as
// tls.crt/tls.key/ca.crt; a real istiod loads that layout (its log says
// so; it does not fall back to a self-signed CA), publishes ca.crt's root
// in istio-ca-root-cert and signs workload certificates with tls.crt's
// intermediate, chaining to meshroot's root; the agent confirms it loaded
// (roots and probe CSR). After `root prepare` and `root activate` istiod
// reloads the layout: both roots, then the new intermediate, each
// confirmed by the agent.
func TestIstiodTLSLayout(t *testing.T) {
	t.Parallel() // test/kube/run.sh: the istiod tests three at a time
	istiodenv.Binary(t)
	start := time.Now()
	s := startServer(t, rotationConfig)
	c := kubeenv.Start(t, "east")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "east")
	env := []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("east")}
	s.mustAgentOnce(t, "east", c.KubeconfigPath, env, "--restart-istiod", "never", "--format", "tls")
	d := istiodenv.Start(t, c, istiodenv.WithTrustDomain(trustDomain), istiodenv.WithMultiRoot())
	createIstiodDeployment(t, c)
	c.EnsureServiceAccount(t, meshNS, agentSA)
	s.startAgent(t, "east", c.KubeconfigPath, env, "--format", "tls", "--restart-istiod", "auto",
		"--istiod-probe", d.SecureGRPCAddr, "--istiod-probe-server-name", istiodenv.ServerName)
	w := d.Workload(t, "shop", "app")
	t.Logf("set up in %s", time.Since(start).Round(100*time.Millisecond))

	log := d.Log()
	if !strings.Contains(log, "Using kubernetes.io/tls secret type for signing ca files") || !strings.Contains(log, "Use local CA certificate") {
		t.Errorf("istiod's log does not say it loaded the tls layout as its plugged-in CA:\n%s", d.LogTail(40))
	}
	if strings.Contains(log, "Use self-signed certificate as the CA certificate") {
		t.Errorf("istiod made a self-signed CA:\n%s", d.LogTail(40))
	}

	// waitConfirmed waits for the agent's report: istiod loaded, with the
	// Secret's intermediate (by the probe) at bundle seq or later.
	waitConfirmed := func(seq uint64) *tlsCACerts {
		t.Helper()
		var cc *tlsCACerts
		eventually(t, 30*time.Second, fmt.Sprintf("istiod confirmed at bundle %d", seq), func() error {
			cc = mustTLSCACerts(t, c)
			v := istiodStatus(t, s, "east")
			if v.Istiod.State != "loaded" || !v.Istiod.Probed || v.Istiod.BundleSequence < seq || v.Istiod.Serial != cc.serial {
				return fmt.Errorf("istiod %+v; the Secret: bundle %d, tls.crt %s", v.Istiod, cc.seq, cc.serial)
			}
			if !sameIDs(v.Istiod.Roots, certIDs(cc.roots)...) {
				return fmt.Errorf("istiod publishes %v, ca.crt holds %v", v.Istiod.Roots, certIDs(cc.roots))
			}
			return nil
		})
		return cc
	}
	// issued checks a workload certificate from istiod against the Secret.
	issued := func(cc *tlsCACerts) {
		t.Helper()
		var cert *istiodenv.Cert
		eventually(t, 20*time.Second, "a workload certificate from tls.crt's intermediate "+cc.serial, func() error {
			var err error
			if cert, err = w.Certificate(context.Background(), 10*time.Minute); err != nil {
				return err
			}
			if got := fmt.Sprintf("%x", cert.Intermediate().SerialNumber); got != cc.serial {
				return fmt.Errorf("signed by intermediate %s", got)
			}
			return nil
		})
		if got := cert.Leaf().URIs; len(got) != 1 || got[0].String() != w.SPIFFEID() {
			t.Errorf("leaf names %v, want %s", got, w.SPIFFEID())
		}
		if !sameCerts(cert.Roots, cc.roots) {
			t.Errorf("istiod returned roots %s, want ca.crt's %s", describeCerts(cert.Roots), describeCerts(cc.roots))
		}
		inter := x509.NewCertPool()
		for _, x := range cert.Chain[1:] {
			inter.AddCert(x)
		}
		chains, err := cert.Leaf().Verify(x509.VerifyOptions{Roots: poolOf(cc.roots), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			t.Fatalf("the workload certificate does not chain to meshroot's roots in ca.crt: %v", err)
		}
		top := chains[0][len(chains[0])-1]
		t.Logf("workload certificate for %s: intermediate %s, root %s", w.SPIFFEID(), cc.serial, rootID(top)[:12])
	}

	cc := waitConfirmed(1)
	if roots := w.WaitRoots(t, 30*time.Second); !sameCerts(roots, cc.roots) {
		t.Errorf("istio-ca-root-cert holds %s, want ca.crt's %s", describeCerts(roots), describeCerts(cc.roots))
	}
	issued(cc)

	// Reloads in this layout: ca.crt gains the prepared root, then tls.crt
	// the intermediate from it.
	s.cli("root", "prepare")
	prepared := waitConfirmed(2)
	if len(prepared.roots) != 2 || prepared.serial != cc.serial {
		t.Fatalf("after prepare: ca.crt holds %d roots, tls.crt %s; want 2 and the same intermediate %s", len(prepared.roots), prepared.serial, cc.serial)
	}
	eventually(t, 20*time.Second, "both roots in istio-ca-root-cert", func() error {
		roots, err := w.Roots(context.Background())
		if err != nil || !sameCerts(roots, prepared.roots) {
			return fmt.Errorf("istio-ca-root-cert holds %s (%v)", describeCerts(roots), err)
		}
		return nil
	})
	s.cli("root", "activate")
	var activated *tlsCACerts
	eventually(t, 30*time.Second, "a new intermediate in tls.crt", func() error {
		if activated = mustTLSCACerts(t, c); activated.serial == cc.serial {
			return fmt.Errorf("tls.crt still holds %s", cc.serial)
		}
		return nil
	})
	activated = waitConfirmed(activated.seq)
	newRoot := slices.IndexFunc(activated.roots, func(r *x509.Certificate) bool { return !containsCert(cc.roots, r) })
	if newRoot < 0 || activated.inter.CheckSignatureFrom(activated.roots[newRoot]) != nil {
		t.Errorf("the activated intermediate %s is not from the prepared root", activated.serial)
	}
	issued(activated)
	if strings.Contains(d.Log(), "Failed to update new Plug-in CA certs") {
		t.Errorf("istiod failed a reload:\n%s", d.LogTail(40))
	}
}
