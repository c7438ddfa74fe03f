package kube

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// TestAgentCRLFileRules: the agent daemon against a real apiserver keeps
// both rules for ca-crl.pem (issue 12 item 4). Before it ever wrote the
// file, a fleet CA without a CRL (another cluster's intermediate) keeps it
// out: nothing Envoy would refuse valid chains with, and istiod has no CRL
// to keep. After `cluster quarantine` of that cluster the set is complete
// and the file is written, listing its intermediate. From then on istiod
// may publish it and never retracts it, so a new CA without a CRL leaves
// the file in place, with every CRL there is, and the agent reports the
// gap (meshroot_agent_crl_missing_cas, an error log naming the CA).
func TestAgentCRLFileRules(t *testing.T) {
	c := kubeenv.Start(t, "crl")
	s := startServer(t, "")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "crl")
	issueOther := func(name string) *x509.Certificate {
		s.cli("cluster", "add", name)
		out := filepath.Join(t.TempDir(), name)
		s.cli("intermediate", "issue", "--cluster", name, "--out", out, "--insecure-plaintext-key")
		data, err := os.ReadFile(filepath.Join(out, "ca-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := parseCerts(data)
		if err != nil || len(certs) != 1 {
			t.Fatalf("%s's ca-cert.pem: %d certificates, %v", name, len(certs), err)
		}
		return certs[0]
	}
	other := issueOther("other")
	metricsAddr := "127.0.0.1:" + freePorts(t, 1)[0]
	a := s.startAgent(t, "crl", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("crl")}, "--metrics-addr", metricsAddr)
	metric := func(name string) string {
		m := agentMetric(t, metricsAddr, name)
		return m[strings.LastIndex(m, " ")+1:]
	}
	crlFile := func() ([]byte, bool) {
		sec := getSecret(t, c, meshNS, cacertsName)
		if sec == nil {
			return nil, false
		}
		data, ok := sec.Data[crlKey]
		return data, ok
	}

	// Before the first ca-crl.pem: other's intermediate has no CRL, so
	// none is written.
	eventually(t, 30*time.Second, "the agent sees other's intermediate without a CRL", func() error {
		a.alive(t)
		if getSecret(t, c, meshNS, cacertsName) == nil {
			return fmt.Errorf("no cacerts yet")
		}
		if m := metric("meshroot_agent_crl_missing_cas"); m != "1" {
			return fmt.Errorf("meshroot_agent_crl_missing_cas %q", m)
		}
		return nil
	})
	first := mustCACerts(t, c)
	if data, ok := crlFile(); ok {
		t.Fatalf("ca-crl.pem written (%d CRLs) while other's intermediate has no CRL and istiod has none yet", len(parseCRLs(t, data)))
	}
	if m := metric("meshroot_agent_crl_published"); m != "0" {
		t.Errorf("meshroot_agent_crl_published %q before any ca-crl.pem, want 0", m)
	}
	if log := a.output(); !strings.Contains(log, "not writing ca-crl.pem") || !strings.Contains(log, "CN=other") {
		t.Errorf("the agent's log does not say why ca-crl.pem is not written:\n%s", a.tail(20))
	}

	// Quarantined, other's intermediate is revoked and needs no CRL: the
	// set is complete and the file is written, listing it.
	s.cli("cluster", "quarantine", "other", "--reason", "test")
	var written []byte
	eventually(t, 30*time.Second, "ca-crl.pem written, listing other's intermediate", func() error {
		a.alive(t)
		data, ok := crlFile()
		if !ok {
			return fmt.Errorf("no ca-crl.pem")
		}
		for _, rl := range parseCRLs(t, data) {
			for _, e := range rl.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(other.SerialNumber) == 0 {
					written = data
					return nil
				}
			}
		}
		return fmt.Errorf("no CRL in ca-crl.pem lists other's intermediate")
	})
	checkCRLs(t, "ca-crl.pem", written, map[string]*x509.Certificate{"root": first.roots[0], "crl": first.cert})
	// The quarantine shows as applied by this cluster once its agent
	// reported the ca-crl.pem that lists other's intermediate.
	eventually(t, 30*time.Second, "cluster list: other's quarantine applied by crl", func() error {
		var list []struct {
			Name       string `json:"name"`
			Quarantine *struct {
				Enforcement struct {
					AppliedBy []string `json:"applied_by"`
					Pending   []struct {
						Cluster string `json:"cluster"`
						Detail  string `json:"detail"`
					} `json:"pending"`
				} `json:"enforcement"`
			} `json:"quarantine"`
		}
		if err := json.Unmarshal([]byte(s.cli("cluster", "list", "-o", "json")), &list); err != nil {
			return err
		}
		for _, c := range list {
			if c.Name == "other" && c.Quarantine != nil {
				if e := c.Quarantine.Enforcement; len(e.AppliedBy) != 1 || e.AppliedBy[0] != "crl" || len(e.Pending) != 0 {
					return fmt.Errorf("applied by %v, pending %+v", e.AppliedBy, e.Pending)
				}
				return nil
			}
		}
		return fmt.Errorf("other is not listed as quarantined")
	})
	if st := s.cli("root", "status"); !strings.Contains(st, "quarantined other since") || !strings.Contains(st, "applied by crl\n") {
		t.Errorf("root status:\n%s", st)
	}
	eventually(t, 15*time.Second, "metrics of a complete, written set", func() error {
		if m, p := metric("meshroot_agent_crl_missing_cas"), metric("meshroot_agent_crl_published"); m != "0" || p != "1" {
			return fmt.Errorf("missing %q, published %q", m, p)
		}
		return nil
	})

	// After it: a third cluster's intermediate without a CRL. The file
	// stays as it was, and the gap is reported.
	issueOther("third")
	eventually(t, 30*time.Second, "the agent reports third's intermediate without a CRL", func() error {
		a.alive(t)
		if m := metric("meshroot_agent_crl_missing_cas"); m != "1" {
			return fmt.Errorf("meshroot_agent_crl_missing_cas %q", m)
		}
		return nil
	})
	data, ok := crlFile()
	if !ok {
		t.Fatal("ca-crl.pem taken out once written: istiod would keep its old set")
	}
	checkCRLs(t, "ca-crl.pem with third missing", data, map[string]*x509.Certificate{"root": first.roots[0], "crl": first.cert})
	if m := metric("meshroot_agent_crl_published"); m != "1" {
		t.Errorf("meshroot_agent_crl_published %q, want 1", m)
	}
	if log := a.output(); !strings.Contains(log, "ca-crl.pem is incomplete") || !strings.Contains(log, "CN=third") {
		t.Errorf("the agent's log does not name third's intermediate as missing a CRL:\n%s", a.tail(20))
	}
}
