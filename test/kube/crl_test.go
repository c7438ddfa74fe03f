package kube

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentWritesCRLOnlyWhenComplete: the agent daemon signs its
// intermediate's CRL, sends it, and writes ca-crl.pem (the root's CRL and
// its own) into the cacerts Secret of a real apiserver; when the fleet
// gains an intermediate without a CRL, it takes ca-crl.pem out rather
// than leave a file Envoy would refuse that cluster's chains with; after
// `cluster quarantine` of that cluster, ca-crl.pem is back and lists it.
func TestAgentWritesCRLOnlyWhenComplete(t *testing.T) {
	c, s, a, first := startFollower(t, "crl")
	crlsIn := func() ([]*x509.RevocationList, bool) {
		sec := getSecret(t, c, meshNS, cacertsName)
		data, ok := sec.Data["ca-crl.pem"]
		if !ok {
			return nil, false
		}
		var out []*x509.RevocationList
		for blk, rest := pem.Decode(data); blk != nil; blk, rest = pem.Decode(rest) {
			rl, err := x509.ParseRevocationList(blk.Bytes)
			if err != nil {
				t.Fatalf("ca-crl.pem: %v", err)
			}
			out = append(out, rl)
		}
		return out, true
	}
	eventually(t, 30*time.Second, "ca-crl.pem with the root's CRL and the cluster's own", func() error {
		a.alive(t)
		crls, ok := crlsIn()
		if !ok || len(crls) != 2 {
			return fmt.Errorf("ca-crl.pem: present %v, %d CRLs", ok, len(crls))
		}
		if crls[0].CheckSignatureFrom(first.roots[0]) != nil && crls[1].CheckSignatureFrom(first.roots[0]) != nil {
			return fmt.Errorf("no CRL signed by the root")
		}
		if crls[0].CheckSignatureFrom(first.cert) != nil && crls[1].CheckSignatureFrom(first.cert) != nil {
			return fmt.Errorf("no CRL signed by the cluster's intermediate")
		}
		return nil
	})
	// A second cluster's intermediate without a CRL: the file goes.
	s.cli("cluster", "add", "other")
	s.cli("intermediate", "issue", "--cluster", "other", "--out", filepath.Join(t.TempDir(), "other"), "--insecure-plaintext-key")
	eventually(t, 30*time.Second, "ca-crl.pem withheld while other has no CRL", func() error {
		a.alive(t)
		if _, ok := crlsIn(); ok {
			return fmt.Errorf("ca-crl.pem still there")
		}
		return nil
	})
	// Quarantined, other's intermediate is revoked and needs no CRL of its own.
	s.cli("cluster", "quarantine", "other", "--reason", "test")
	eventually(t, 30*time.Second, "ca-crl.pem back, listing other's intermediate", func() error {
		a.alive(t)
		crls, ok := crlsIn()
		if !ok {
			return fmt.Errorf("no ca-crl.pem")
		}
		for _, rl := range crls {
			if len(rl.RevokedCertificateEntries) == 1 {
				return nil
			}
		}
		return fmt.Errorf("no CRL lists other's intermediate")
	})
	// The quarantine shows as applied by this cluster once its agent
	// reported the ca-crl.pem that lists other's intermediate (until then
	// pending: the file was withheld when other was quarantined).
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
}
