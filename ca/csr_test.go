package ca

import (
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestParseCSR(t *testing.T) {
	csr := testCSR(t, p256(t), nil)
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
	if _, err := ParseCSR(pemCSR); err != nil {
		t.Fatalf("PEM CSR refused: %v", err)
	}
	if _, err := ParseCSR(csr.Raw); err != nil {
		t.Fatalf("DER CSR refused: %v", err)
	}
	tampered := append([]byte(nil), csr.Raw...)
	tampered[len(tampered)-2] ^= 0x55
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"empty":         {nil, "empty"},
		"too large":     {make([]byte, MaxCSRSize+1), "at most"},
		"two blocks":    {append(append([]byte(nil), pemCSR...), pemCSR...), "more than one"},
		"wrong type":    {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: csr.Raw}), "want CERTIFICATE REQUEST"},
		"bad pem":       {[]byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n"), "not valid PEM"},
		"garbage der":   {[]byte{0x30, 0x03, 0x01, 0x02}, "cannot be parsed"},
		"bad signature": {tampered, "signature"},
	}
	for name, c := range cases {
		if _, err := ParseCSR(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ParseCSR error = %v, want one containing %q", name, err, c.want)
		}
	}
}

// FuzzCSRIntake feeds arbitrary bytes through the CSR intake (parse, then
// sign under policy): it must never panic, and whatever it signs must have
// the intermediate profile.
func FuzzCSRIntake(f *testing.F) {
	a, root := testAuthority(f, Policy{})
	csr := testCSR(f, p256(f), nil)
	f.Add(csr.Raw)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x82, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		parsed, err := ParseCSR(data)
		if err != nil {
			return
		}
		cert, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: parsed, TTL: 48 * time.Hour})
		if err != nil {
			return
		}
		if !cert.IsCA || cert.MaxPathLen != 0 || !cert.MaxPathLenZero || len(cert.DNSNames)+len(cert.URIs)+len(cert.ExtKeyUsage) != 0 {
			t.Fatalf("signed a certificate outside the profile: %+v", cert)
		}
		if err := cert.CheckSignatureFrom(root); err != nil {
			t.Fatal(err)
		}
	})
}
