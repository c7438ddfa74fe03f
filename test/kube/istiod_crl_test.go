// The CRLs meshroot's agent writes into cacerts (ca-crl.pem), as a real
// istiod publishes them to proxies: the istio-ca-crl ConfigMap (issue 12
// item 3).

package kube

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/istiodenv"
	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

const (
	// crlConfigMap is where istiod (PILOT_ENABLE_CA_CRL, on by default;
	// name PILOT_CRL_CONFIGMAP) writes the plugged-in CA's CRLs, in every
	// namespace it watches, key ca-crl.pem: what the sidecar injector
	// mounts at /var/run/secrets/istio/crl for Envoy.
	crlConfigMap = "istio-ca-crl"
	crlKey       = "ca-crl.pem"
)

// crlConfigMapData reads istio-ca-crl's ca-crl.pem in ns ("" and false
// when there is none).
func crlConfigMapData(t testing.TB, c *kubeenv.Cluster, ns string) (string, bool) {
	t.Helper()
	cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), crlConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data[crlKey], true
}

// parseCRLs parses every PEM block of data as a CRL.
func parseCRLs(t testing.TB, data []byte) []*x509.RevocationList {
	t.Helper()
	var out []*x509.RevocationList
	for blk, rest := pem.Decode(data); blk != nil; blk, rest = pem.Decode(rest) {
		rl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			t.Fatalf("CRL: %v", err)
		}
		out = append(out, rl)
	}
	return out
}

// TestIstiodCRLConfigMap: the agent daemon writes ca-crl.pem (the root's
// CRL and its intermediate's) into cacerts; a real istiod started on that
// folder publishes exactly those CRLs in istio-ca-crl, in its own
// namespace and a workload's. istiod never retracts a published CRL, so
// from then on the agent never takes ca-crl.pem out (issue 12 item 4):
// another cluster gets an intermediate without a CRL, and the file stays
// with every CRL there is while the agent reports the gap (metric, log);
// a new root is prepared, and the update that brings it into
// root-cert.pem brings its CRL too; the other cluster is quarantined, and
// ca-crl.pem lists its intermediate. istio-ca-crl follows each step, never
// with a stale CRL or a lower CRL number. Last, with the agent stopped,
// ca-crl.pem is removed by hand: istiod keeps istio-ca-crl as it was.
func TestIstiodCRLConfigMap(t *testing.T) {
	t.Parallel() // test/kube/run.sh: the istiod tests three at a time
	istiodenv.Binary(t)
	start := time.Now()
	metricsAddr := "127.0.0.1:" + freePorts(t, 1)[0]
	c, s, a, first := startFollowerArgs(t, "east", "--metrics-addr", metricsAddr, "--restart-istiod", "never")
	var crlFile []byte
	eventually(t, 30*time.Second, "ca-crl.pem with the root's CRL and east's own", func() error {
		a.alive(t)
		crlFile = getSecret(t, c, meshNS, cacertsName).Data[crlKey]
		if n := len(parseCRLs(t, crlFile)); n != 2 {
			return fmt.Errorf("ca-crl.pem holds %d CRLs", n)
		}
		return nil
	})
	d := istiodenv.Start(t, c, istiodenv.WithTrustDomain(trustDomain), istiodenv.WithMultiRoot())
	w := d.Workload(t, "shop", "app")
	t.Logf("set up in %s", time.Since(start).Round(100*time.Millisecond))

	// waitConfigMaps waits until istio-ca-crl holds want in istio-system
	// and in the workload's namespace; with want nil, the Secret's
	// ca-crl.pem as it is then.
	waitConfigMaps := func(what string, want []byte) time.Time {
		t.Helper()
		fixed := want != nil
		eventually(t, 30*time.Second, what, func() error {
			if !fixed {
				want = getSecret(t, c, meshNS, cacertsName).Data[crlKey]
			}
			for _, ns := range []string{meshNS, w.Namespace} {
				got, ok := crlConfigMapData(t, c, ns)
				if !ok {
					return fmt.Errorf("no ConfigMap %s/%s", ns, crlConfigMap)
				}
				if got != string(want) {
					return fmt.Errorf("%s/%s holds %d CRLs (%d bytes), want the %d of ca-crl.pem (%d bytes)", ns, crlConfigMap,
						len(parseCRLs(t, []byte(got))), len(got), len(parseCRLs(t, want)), len(want))
				}
			}
			return nil
		})
		return time.Now()
	}
	if crlFile2 := getSecret(t, c, meshNS, cacertsName).Data[crlKey]; string(crlFile2) != string(crlFile) {
		t.Errorf("ca-crl.pem changed after the agent's first write (%d -> %d bytes): the server's copy of the agent's own CRL should be the one it wrote", len(crlFile), len(crlFile2))
	}
	waitConfigMaps("istio-ca-crl holding ca-crl.pem", nil)
	fresh := crlHistory{}
	fresh.check(t, mustConfigMapCRL(t, c, w.Namespace))
	crls := parseCRLs(t, []byte(mustConfigMapCRL(t, c, w.Namespace)))
	signedBy := func(issuer *x509.Certificate) bool {
		for _, rl := range crls {
			if rl.CheckSignatureFrom(issuer) == nil {
				return true
			}
		}
		return false
	}
	if !signedBy(first.roots[0]) || !signedBy(first.cert) {
		t.Errorf("istio-ca-crl lacks the root's CRL or east's intermediate's")
	}

	// Another cluster's intermediate, without a CRL. istiod never retracts
	// a CRL it published (istio's KeyCertBundle.setAllFromPem and
	// Watcher.SetAndNotifyCACRL ignore an empty one), so taking ca-crl.pem
	// out would leave proxies with the old set: the agent keeps the file,
	// with every CRL it has, and reports the gap (log, metrics).
	s.cli("cluster", "add", "other")
	out := filepath.Join(t.TempDir(), "other")
	s.cli("intermediate", "issue", "--cluster", "other", "--out", out, "--insecure-plaintext-key")
	otherPEM, err := os.ReadFile(filepath.Join(out, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := parseCerts(otherPEM)
	if err != nil || len(other) != 1 {
		t.Fatalf("other's ca-cert.pem: %d certificates, %v", len(other), err)
	}
	eventually(t, 30*time.Second, "the agent reports other's intermediate without a CRL", func() error {
		a.alive(t)
		if m := agentMetric(t, metricsAddr, "meshroot_agent_crl_missing_cas"); !strings.HasSuffix(m, " 1") {
			return fmt.Errorf("agent metric: %q", m)
		}
		return nil
	})
	if m := agentMetric(t, metricsAddr, "meshroot_agent_crl_published"); !strings.HasSuffix(m, " 1") {
		t.Errorf("meshroot_agent_crl_published: %q, want 1", m)
	}
	if log := a.output(); !strings.Contains(log, "ca-crl.pem is incomplete") || !strings.Contains(log, "CN=other") {
		t.Errorf("the agent's log does not name other's intermediate as missing a CRL:\n%s", a.tail(20))
	}
	held := getSecret(t, c, meshNS, cacertsName).Data[crlKey]
	if held == nil {
		t.Fatal("ca-crl.pem taken out of cacerts while other has no CRL: istiod would keep its old set")
	}
	checkCRLs(t, "ca-crl.pem with other missing", held, map[string]*x509.Certificate{"root": first.roots[0], "east": first.cert})
	waitConfigMaps("istio-ca-crl still holding ca-crl.pem", held)
	fresh.check(t, mustConfigMapCRL(t, c, w.Namespace))

	// A new root prepared: the server signs its CRL in the same refresh
	// as the bundle, and the agent writes root-cert.pem and ca-crl.pem in
	// one update: no version of the Secret has the new root without its
	// CRL, or lacks ca-crl.pem.
	watch, err := c.Client.CoreV1().Secrets(meshNS).Watch(context.Background(), metav1.ListOptions{
		FieldSelector: "metadata.name=" + cacertsName, ResourceVersion: getSecret(t, c, meshNS, cacertsName).ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	s.cli("root", "prepare")
	prepared := time.Now()
	bundle := s.bundle()
	if len(bundle) != 2 {
		t.Fatalf("trust bundle after root prepare: %d roots", len(bundle))
	}
	newRoot := bundle[0]
	if newRoot.Equal(first.roots[0]) {
		newRoot = bundle[1]
	}
	var versions int
	var withRoots []byte
	timeout := time.After(30 * time.Second)
	for withRoots == nil {
		select {
		case ev, ok := <-watch.ResultChan():
			if !ok {
				t.Fatal("Secret watch closed")
			}
			sec, isSecret := ev.Object.(*corev1.Secret)
			if !isSecret {
				continue
			}
			versions++
			crlData, hasCRL := sec.Data[crlKey]
			if !hasCRL {
				t.Fatalf("Secret version %s has no ca-crl.pem", sec.ResourceVersion)
			}
			roots, err := parseCerts(sec.Data["root-cert.pem"])
			if err != nil {
				t.Fatal(err)
			}
			if !sameCerts(roots, bundle) {
				continue
			}
			checkCRLs(t, "ca-crl.pem in the update that brought the new root", crlData,
				map[string]*x509.Certificate{"root": first.roots[0], "new root": newRoot, "east": first.cert})
			withRoots = crlData
		case <-timeout:
			t.Fatalf("root-cert.pem never held both roots (%d Secret versions seen):\n%s", versions, a.tail(20))
		}
	}
	at := waitConfigMaps("istio-ca-crl with the new root's CRL", withRoots)
	t.Logf("istio-ca-crl holds the prepared root's CRL %s after `root prepare` (%d Secret versions)", at.Sub(prepared).Round(100*time.Millisecond), versions)
	fresh.check(t, mustConfigMapCRL(t, c, w.Namespace))

	// Quarantined, other's intermediate is revoked: it needs no CRL any
	// more, ca-crl.pem lists it, and istiod publishes that.
	s.cli("cluster", "quarantine", "other", "--reason", "test")
	quarantined := time.Now()
	var listed []byte
	eventually(t, 30*time.Second, "ca-crl.pem listing other's intermediate", func() error {
		a.alive(t)
		listed = getSecret(t, c, meshNS, cacertsName).Data[crlKey]
		for _, rl := range parseCRLs(t, listed) {
			for _, e := range rl.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(other[0].SerialNumber) == 0 {
					return nil
				}
			}
		}
		return fmt.Errorf("no CRL in ca-crl.pem lists other's intermediate %x", other[0].SerialNumber)
	})
	at = waitConfigMaps("istio-ca-crl holding the new ca-crl.pem", listed)
	t.Logf("istio-ca-crl lists quarantined other's intermediate %x %s after `cluster quarantine`", other[0].SerialNumber, at.Sub(quarantined).Round(100*time.Millisecond))
	fresh.check(t, mustConfigMapCRL(t, c, w.Namespace))
	checkCRLs(t, "ca-crl.pem after the quarantine", listed, map[string]*x509.Certificate{"root": first.roots[0], "new root": newRoot, "east": first.cert})
	eventually(t, 30*time.Second, "the agent reports a complete set", func() error {
		if m := agentMetric(t, metricsAddr, "meshroot_agent_crl_missing_cas"); !strings.HasSuffix(m, " 0") {
			return fmt.Errorf("agent metric: %q", m)
		}
		return nil
	})

	// Why the agent never takes the file out: with the agent stopped and
	// ca-crl.pem removed from cacerts, istiod reloads the folder and keeps
	// istio-ca-crl as it was (istio's KeyCertBundle.setAllFromPem and
	// Watcher.SetAndNotifyCACRL ignore an empty CRL).
	a.stop(t)
	sec := getSecret(t, c, meshNS, cacertsName)
	delete(sec.Data, crlKey)
	if _, err := c.Client.CoreV1().Secrets(meshNS).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d.WaitSynced(t, 30*time.Second)
	time.Sleep(2 * time.Second) // istiod's reload of the folder takes ~0.1 s
	if got := mustConfigMapCRL(t, c, w.Namespace); got != string(listed) {
		t.Errorf("with ca-crl.pem gone from its folder istiod changed istio-ca-crl (%d CRLs): istiod now retracts CRLs; agent/crl_plan.go and docs/quarantine.md say it does not", len(parseCRLs(t, []byte(got))))
	}
}

// checkCRLs fails unless data holds exactly one CRL of each CA in cas,
// signed by it and current.
func checkCRLs(t testing.TB, what string, data []byte, cas map[string]*x509.Certificate) {
	t.Helper()
	crls := parseCRLs(t, data)
	for name, c := range cas {
		n := 0
		for _, rl := range crls {
			if rl.CheckSignatureFrom(c) != nil {
				continue
			}
			n++
			if !rl.NextUpdate.After(time.Now()) {
				t.Errorf("%s: %s's CRL %d is past its nextUpdate %s", what, name, rl.Number, rl.NextUpdate)
			}
		}
		if n != 1 {
			t.Errorf("%s: %d CRLs of %s among %d, want 1", what, n, name, len(crls))
		}
	}
}

// crlHistory checks successive istio-ca-crl contents: one CRL per CA,
// each current, and the CRL number of a CA never going down.
type crlHistory map[string]*big.Int

func (h crlHistory) check(t testing.TB, data string) {
	t.Helper()
	seen := map[string]bool{}
	for _, rl := range parseCRLs(t, []byte(data)) {
		k := string(rl.RawIssuer) + "\x00" + string(rl.AuthorityKeyId)
		if seen[k] {
			t.Errorf("istio-ca-crl holds two CRLs of %s", rl.Issuer)
		}
		seen[k] = true
		if !rl.NextUpdate.After(time.Now()) {
			t.Errorf("istio-ca-crl holds a CRL of %s past its nextUpdate %s", rl.Issuer, rl.NextUpdate)
		}
		if last, ok := h[k]; ok && rl.Number.Cmp(last) < 0 {
			t.Errorf("istio-ca-crl went back from CRL number %s to %s for %s", last, rl.Number, rl.Issuer)
		}
		h[k] = rl.Number
	}
}

func mustConfigMapCRL(t testing.TB, c *kubeenv.Cluster, ns string) string {
	t.Helper()
	got, ok := crlConfigMapData(t, c, ns)
	if !ok {
		t.Fatalf("no ConfigMap %s/%s", ns, crlConfigMap)
	}
	return got
}
