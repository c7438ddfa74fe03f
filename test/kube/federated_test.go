package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// foreignRootPEM makes a self-signed CA of another trust domain, as PEM.
func foreignRootPEM(t *testing.T, td string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: td + " root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

const istioMesh = `# managed by the Istio installer
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
trustDomain: example.org
caCertificates:
- pem: handmade
  certSigners: [clusterissuers.cert-manager.io/istio-ca]
`

// TestAgentDeliversFederatedBundles: a federated trust domain's bundle
// reaches the cluster as a ConfigMap key and, with --mesh-config, as a
// caCertificates entry of the istio mesh config that leaves everything
// else in place; removing the federation removes both.
func TestAgentDeliversFederatedBundles(t *testing.T) {
	c := kubeenv.Start(t, "fed")
	c.EnsureNamespace(t, meshNS)
	s := startServer(t, "")
	s.cli("cluster", "add", "fed")
	ctx := t.Context()
	cms := c.Client.CoreV1().ConfigMaps(meshNS)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: meshNS}, Data: map[string]string{"mesh": istioMesh}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A peer whose endpoint is not reachable: its bootstrap bundle is what
	// meshroot holds and delivers.
	other := foreignRootPEM(t, "other.org")
	bootstrap := writeFile(t, t.TempDir(), "other.pem", []byte(other))
	s.cli("federation", "add", "other.org", "--url", "https://127.0.0.1:1/", "--profile", "https_spiffe",
		"--endpoint-spiffe-id", "spiffe://other.org/spire/server", "--bootstrap-bundle", bootstrap)

	a := s.startAgent(t, "fed", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("fed")}, "--mesh-config")
	eventually(t, 30*time.Second, "federated bundle in the cluster", func() error {
		a.alive(t)
		cm, err := cms.Get(ctx, "meshroot-federated-bundles", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if strings.TrimSpace(cm.Data["other.org"]) != strings.TrimSpace(other) || len(cm.Data) != 1 {
			return fmt.Errorf("ConfigMap data keys %v", keys(cm.Data))
		}
		return nil
	})
	var mesh struct {
		DefaultConfig struct {
			DiscoveryAddress string `yaml:"discoveryAddress"`
		} `yaml:"defaultConfig"`
		TrustDomain    string `yaml:"trustDomain"`
		CACertificates []struct {
			PEM          string   `yaml:"pem"`
			CertSigners  []string `yaml:"certSigners"`
			TrustDomains []string `yaml:"trustDomains"`
		} `yaml:"caCertificates"`
	}
	eventually(t, 30*time.Second, "caCertificates entry in the mesh config", func() error {
		cm, err := cms.Get(ctx, "istio", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := yaml.Unmarshal([]byte(cm.Data["mesh"]), &mesh); err != nil {
			return err
		}
		if len(mesh.CACertificates) != 2 {
			return fmt.Errorf("%d caCertificates entries", len(mesh.CACertificates))
		}
		return nil
	})
	if mesh.DefaultConfig.DiscoveryAddress != "istiod.istio-system.svc:15012" || mesh.TrustDomain != "example.org" ||
		mesh.CACertificates[0].PEM != "handmade" || len(mesh.CACertificates[0].CertSigners) != 1 {
		t.Errorf("the rest of the mesh config changed: %+v", mesh)
	}
	if e := mesh.CACertificates[1]; strings.TrimSpace(e.PEM) != strings.TrimSpace(other) || len(e.TrustDomains) != 1 || e.TrustDomains[0] != "other.org" {
		t.Errorf("meshroot's entry: %+v", e)
	}

	s.cli("federation", "remove", "other.org")
	eventually(t, 30*time.Second, "federated bundle removed", func() error {
		a.alive(t)
		cm, err := cms.Get(ctx, "meshroot-federated-bundles", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(cm.Data) != 0 {
			return fmt.Errorf("ConfigMap still has %v", keys(cm.Data))
		}
		ic, err := cms.Get(ctx, "istio", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if strings.Contains(ic.Data["mesh"], "other.org") || !strings.Contains(ic.Data["mesh"], "handmade") {
			return fmt.Errorf("mesh config: %s", ic.Data["mesh"])
		}
		return nil
	})
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// foreignBundlePEM makes n distinct CA certificates of td, as PEM.
func foreignBundlePEM(t *testing.T, td string, n int) []byte {
	t.Helper()
	var b strings.Builder
	for range n {
		b.WriteString(foreignRootPEM(t, td))
	}
	return []byte(b.String())
}

// TestAgentFederatedBundlesCapped: federated bundles that together would
// overflow a ConfigMap (Kubernetes refuses 1 MiB) are written only up to
// the agent's budget, the rest listed as skipped, and the agent's status
// report still reaches the server. A single peer over what a mesh may hold
// is refused when it is added.
func TestAgentFederatedBundlesCapped(t *testing.T) {
	c := kubeenv.Start(t, "fedcap")
	c.EnsureNamespace(t, meshNS)
	s := startServer(t, "")
	s.cli("cluster", "add", "fedcap")
	ctx := t.Context()
	dir := t.TempDir()

	// One peer with 600 KiB of roots: refused at add, as too large.
	huge := writeFile(t, dir, "huge.pem", foreignBundlePEM(t, "huge.org", 1000))
	r := s.cliResult("federation", "add", "huge.org", "--url", "https://127.0.0.1:1/", "--profile", "https_spiffe",
		"--endpoint-spiffe-id", "spiffe://huge.org/spire/server", "--bootstrap-bundle", huge)
	if r.code == 0 || !strings.Contains(r.stderr, "PEM") {
		t.Fatalf("a peer with 600 KiB of roots was added: %s", r)
	}

	// Five peers with about 240 KiB each: 1.2 MiB together.
	peers := []string{"p1.org", "p2.org", "p3.org", "p4.org", "p5.org"}
	for _, td := range peers {
		f := writeFile(t, dir, td+".pem", foreignBundlePEM(t, td, 400))
		s.cli("federation", "add", td, "--url", "https://127.0.0.1:1/", "--profile", "https_spiffe",
			"--endpoint-spiffe-id", "spiffe://"+td+"/spire/server", "--bootstrap-bundle", f)
	}
	// An istio mesh config already so large that the federated entries
	// cannot be added to it: that write fails, and must not keep the
	// report from the server either.
	cms := c.Client.CoreV1().ConfigMaps(meshNS)
	bigMesh := istioMesh + "# " + strings.Repeat("x", 500<<10) + "\n"
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: meshNS}, Data: map[string]string{"mesh": bigMesh}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := s.startAgent(t, "fedcap", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("fedcap")}, "--mesh-config")
	eventually(t, 60*time.Second, "capped federated ConfigMap", func() error {
		a.alive(t)
		cm, err := cms.Get(ctx, "meshroot-federated-bundles", metav1.GetOptions{})
		if err != nil {
			return err
		}
		size := 0
		for _, v := range cm.Data {
			size += len(v)
		}
		skipped := cm.Annotations["meshroot.io/skipped-trust-domains"]
		if len(cm.Data) == 0 || size > 512<<10 || strings.Count(skipped, "budget") != len(peers)-len(cm.Data) {
			return fmt.Errorf("ConfigMap holds %v (%d bytes), skipped %q", keys(cm.Data), size, skipped)
		}
		return nil
	})
	eventually(t, 60*time.Second, "the agent's status report", func() error {
		a.alive(t)
		var st struct {
			BundleSequence uint64 `json:"bundle_sequence"`
			Clusters       []struct {
				Cluster        string `json:"cluster"`
				BundleSequence uint64 `json:"bundle_sequence_applied"`
			} `json:"clusters"`
		}
		out := s.cli("root", "status", "-o", "json")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("root status -o json: %v", err)
		}
		if len(st.Clusters) != 1 || st.Clusters[0].BundleSequence == 0 || st.Clusters[0].BundleSequence != st.BundleSequence {
			return fmt.Errorf("root status: %s", out)
		}
		return nil
	})
	if ic, err := cms.Get(ctx, "istio", metav1.GetOptions{}); err != nil || ic.Data["mesh"] != bigMesh {
		t.Errorf("the oversized mesh config was changed (%v)", err)
	}
}
