package agent

import (
	"encoding/pem"
	"maps"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

const meshBefore = `# istiod's mesh config
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  proxyMetadata:
    ISTIO_META_DNS_CAPTURE: "true"
trustDomain: example.org
caCertificates:
  - pem: |
      -----BEGIN CERTIFICATE-----
      handmade
      -----END CERTIFICATE-----
    certSigners:
      - clusterissuers.cert-manager.io/istio-ca
  - pem: old
    trustDomains: [gone.org]
enablePrometheusMerge: true
`

type meshDoc struct {
	DefaultConfig struct {
		DiscoveryAddress string            `yaml:"discoveryAddress"`
		ProxyMetadata    map[string]string `yaml:"proxyMetadata"`
	} `yaml:"defaultConfig"`
	TrustDomain           string `yaml:"trustDomain"`
	EnablePrometheusMerge bool   `yaml:"enablePrometheusMerge"`
	CACertificates        []struct {
		PEM          string   `yaml:"pem"`
		CertSigners  []string `yaml:"certSigners"`
		TrustDomains []string `yaml:"trustDomains"`
	} `yaml:"caCertificates"`
}

func TestUpdateCACertificatesKeepsTheRest(t *testing.T) {
	out, err := updateCACertificates(meshBefore, map[string]bool{"gone.org": true}, map[string]string{
		"other.org": "PEM-OTHER\n", "third.org": "PEM-THIRD\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	var got meshDoc
	if err := yaml.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.DefaultConfig.DiscoveryAddress != "istiod.istio-system.svc:15012" || got.DefaultConfig.ProxyMetadata["ISTIO_META_DNS_CAPTURE"] != "true" ||
		got.TrustDomain != "example.org" || !got.EnablePrometheusMerge {
		t.Errorf("other settings changed:\n%s", out)
	}
	if !strings.Contains(out, "# istiod's mesh config") {
		t.Errorf("comment lost:\n%s", out)
	}
	if len(got.CACertificates) != 3 {
		t.Fatalf("want the handmade entry and two meshroot entries, got %d:\n%s", len(got.CACertificates), out)
	}
	if got.CACertificates[0].CertSigners[0] != "clusterissuers.cert-manager.io/istio-ca" {
		t.Errorf("handmade entry changed: %+v", got.CACertificates[0])
	}
	for i, td := range []string{"other.org", "third.org"} {
		e := got.CACertificates[i+1]
		if len(e.TrustDomains) != 1 || e.TrustDomains[0] != td || !strings.HasPrefix(e.PEM, "PEM-") {
			t.Errorf("entry %d: %+v, want trust domain %s", i+1, e, td)
		}
	}
	if strings.Contains(out, "gone.org") {
		t.Errorf("entry of a trust domain no longer federated kept:\n%s", out)
	}
}

func TestUpdateCACertificatesEmptyAndIdempotent(t *testing.T) {
	out, err := updateCACertificates("", nil, map[string]string{"other.org": "PEM\n"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := updateCACertificates(out, map[string]bool{"other.org": true}, map[string]string{"other.org": "PEM\n"})
	if err != nil {
		t.Fatal(err)
	}
	if again != out {
		t.Errorf("second update changed the document:\n%s\n---\n%s", out, again)
	}
	// Removing the last federation removes meshroot's entries only.
	none, err := updateCACertificates(out, map[string]bool{"other.org": true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(none, "other.org") {
		t.Errorf("entry left after federation removed:\n%s", none)
	}
	// An unmanaged entry naming a trust domain that meshroot manages among
	// others is not meshroot's and stays.
	mixed := "caCertificates:\n  - pem: x\n    trustDomains: [other.org, mine.org]\n"
	kept, err := updateCACertificates(mixed, map[string]bool{"other.org": true}, nil)
	if err != nil || !strings.Contains(kept, "mine.org") {
		t.Errorf("mixed entry dropped: %v\n%s", err, kept)
	}
	if _, err := updateCACertificates("- a list\n", nil, nil); err == nil {
		t.Error("a mesh config that is not a mapping was accepted")
	}
}

func TestCompareRoots(t *testing.T) {
	a, b, c := testCert(t), testCert(t), testCert(t)
	for name, tc := range map[string]struct {
		old, new                 []*x509Cert
		created                  bool
		changed, superset, creat bool
	}{
		"created":  {nil, []*x509Cert{a}, true, true, false, true},
		"same":     {[]*x509Cert{a}, []*x509Cert{a}, false, false, true, false},
		"superset": {[]*x509Cert{a}, []*x509Cert{a, b}, false, true, true, false},
		"subset":   {[]*x509Cert{a, b}, []*x509Cert{b}, false, true, true, false},
		"disjoint": {[]*x509Cert{a}, []*x509Cert{c}, false, true, false, false},
	} {
		got := compareRoots(tc.old, tc.new, tc.created)
		if got.changed != tc.changed || got.created != tc.creat || (!tc.created && got.supersetOrSub != tc.superset) {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

// fedBundle is a federated bundle of td holding root n times.
func fedBundle(td string, root *x509Cert, n int) *meshrootv1.FederatedBundle {
	f := &meshrootv1.FederatedBundle{TrustDomain: td}
	for range n {
		f.Roots = append(f.Roots, root.Raw)
	}
	return f
}

// TestSelectFederatedRefusesOwnTrustDomain: whatever the server sends, the
// agent never writes a federated entry for its own trust domain (the
// bundle's, or the one the mesh config names).
func TestSelectFederatedRefusesOwnTrustDomain(t *testing.T) {
	r := testCert(t)
	set := selectFederated([]string{"example.org", "cluster.local"}, []*meshrootv1.FederatedBundle{
		fedBundle("example.org", r, 1), fedBundle("cluster.local", r, 1), fedBundle("other.org", r, 1),
	})
	if _, ok := set.PEM["example.org"]; ok {
		t.Error("a federated entry for our own trust domain example.org was selected")
	}
	if _, ok := set.PEM["cluster.local"]; ok {
		t.Error("a federated entry for the mesh's trust domain cluster.local was selected")
	}
	if len(set.PEM) != 1 || set.PEM["other.org"] == "" {
		t.Errorf("selected %v, want other.org only", slices.Collect(maps.Keys(set.PEM)))
	}
	if !strings.Contains(set.Skipped["example.org"], "own trust domain") || !strings.Contains(set.skippedAnnotation(), "cluster.local: ") {
		t.Errorf("skipped %q", set.skippedAnnotation())
	}
}

// TestSelectFederatedBudget: the PEM written into the mesh is capped in
// total; smallest bundles go first, the rest are skipped with the reason.
func TestSelectFederatedBudget(t *testing.T) {
	r := testCert(t)
	per := len(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw}))
	big := MaxFederatedBytes/per/2 + 1 // just over half the budget
	set := selectFederated([]string{"example.org"}, []*meshrootv1.FederatedBundle{
		fedBundle("a-big.org", r, big), fedBundle("b-big.org", r, big), fedBundle("small.org", r, 2),
		fedBundle("bad.org", r, 0), {TrustDomain: "broken.org", Roots: [][]byte{[]byte("not DER")}},
	})
	total := 0
	for _, v := range set.PEM {
		total += len(v)
	}
	if total > MaxFederatedBytes {
		t.Fatalf("selected %d bytes of PEM, over the %d budget", total, MaxFederatedBytes)
	}
	if set.PEM["small.org"] == "" || set.PEM["a-big.org"] == "" || len(set.PEM) != 2 {
		t.Errorf("selected %v, want small.org and a-big.org (smallest first, then by name)", slices.Collect(maps.Keys(set.PEM)))
	}
	if !strings.Contains(set.Skipped["b-big.org"], "budget") || !strings.Contains(set.Skipped["broken.org"], "unreadable") {
		t.Errorf("skipped %q", set.skippedAnnotation())
	}
	if _, ok := set.Skipped["bad.org"]; ok {
		t.Error("a bundle without roots is not worth a skip note")
	}
}
