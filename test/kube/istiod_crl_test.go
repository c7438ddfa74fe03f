// The CRLs meshroot's agent writes into cacerts (ca-crl.pem), as a real
// istiod publishes them to proxies: the istio-ca-crl ConfigMap (issue 12
// item 3).

package kube

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

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
// namespace and a workload's. Another cluster gets an intermediate (the
// agent withholds ca-crl.pem until that CA has a CRL) and is then
// quarantined: ca-crl.pem comes back listing that cluster's intermediate,
// istiod reloads the folder, and istio-ca-crl is the new file, listing it.
func TestIstiodCRLConfigMap(t *testing.T) {
	istiodenv.Binary(t)
	start := time.Now()
	c, s, a, first := startFollower(t, "east")
	var crlFile []byte
	eventually(t, 30*time.Second, "ca-crl.pem with the root's CRL and east's own", func() error {
		a.alive(t)
		crlFile = getSecret(t, c, meshNS, cacertsName).Data[crlKey]
		if n := len(parseCRLs(t, crlFile)); n != 2 {
			return fmt.Errorf("ca-crl.pem holds %d CRLs", n)
		}
		return nil
	})
	d := istiodenv.Start(t, c, istiodenv.WithTrustDomain(trustDomain))
	w := d.Workload(t, "shop", "app")
	t.Logf("set up in %s", time.Since(start).Round(100*time.Millisecond))

	// waitConfigMaps waits until istio-ca-crl holds want in istio-system
	// and in the workload's namespace.
	waitConfigMaps := func(what string, want []byte) time.Time {
		t.Helper()
		eventually(t, 30*time.Second, what, func() error {
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
	waitConfigMaps("istio-ca-crl holding ca-crl.pem", crlFile)
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

	// Another cluster's intermediate, without a CRL: the agent takes
	// ca-crl.pem out. istiod keeps what it published: it never clears its
	// CRL (istio's KeyCertBundle.setAllFromPem and Watcher.SetAndNotifyCACRL
	// ignore an empty one).
	before := mustConfigMapCRL(t, c, w.Namespace)
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
	eventually(t, 30*time.Second, "ca-crl.pem withheld while other has no CRL", func() error {
		a.alive(t)
		if _, ok := getSecret(t, c, meshNS, cacertsName).Data[crlKey]; ok {
			return fmt.Errorf("ca-crl.pem still there")
		}
		return nil
	})
	d.WaitSynced(t, 30*time.Second)
	time.Sleep(2 * time.Second) // istiod's reload of the folder takes ~0.1 s
	if got, _ := crlConfigMapData(t, c, w.Namespace); got != before {
		t.Errorf("with ca-crl.pem gone from its folder istiod changed istio-ca-crl (%d CRLs): istiod now clears its CRL; docs/quarantine.md says it keeps it", len(parseCRLs(t, []byte(got))))
	}

	// Quarantined, other's intermediate is revoked: ca-crl.pem is back,
	// listing it, and istiod publishes that.
	s.cli("cluster", "quarantine", "other", "--reason", "test")
	quarantined := time.Now()
	var listed []byte
	eventually(t, 30*time.Second, "ca-crl.pem back, listing other's intermediate", func() error {
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
	at := waitConfigMaps("istio-ca-crl holding the new ca-crl.pem", listed)
	t.Logf("istio-ca-crl lists quarantined other's intermediate %x %s after `cluster quarantine`", other[0].SerialNumber, at.Sub(quarantined).Round(100*time.Millisecond))
}

func mustConfigMapCRL(t testing.TB, c *kubeenv.Cluster, ns string) string {
	t.Helper()
	got, ok := crlConfigMapData(t, c, ns)
	if !ok {
		t.Fatalf("no ConfigMap %s/%s", ns, crlConfigMap)
	}
	return got
}
