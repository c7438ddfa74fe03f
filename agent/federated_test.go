package agent

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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
