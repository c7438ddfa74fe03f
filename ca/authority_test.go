package ca

import (
	"crypto"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

func TestNewAuthorityRefusals(t *testing.T) {
	root, rootKey := testRoot(t, keys.ECP256)
	otherKey := p256(t)
	interKey := p256(t)
	year := time.Now().Add(365 * 24 * time.Hour)
	inter := signCA(t, root, rootKey, interKey.Public(), "inter", -1, x509.KeyUsageCertSign, year)
	interPath0 := signCA(t, root, rootKey, interKey.Public(), "inter0", 0, x509.KeyUsageCertSign, year)
	interNoSign := signCA(t, root, rootKey, interKey.Public(), "intersign", -1, x509.KeyUsageDigitalSignature, year)
	expiredRootKey := p256(t)
	expired := signCA(t, nil, expiredRootKey, expiredRootKey.Public(), "old", -1, x509.KeyUsageCertSign, time.Now().Add(-time.Minute))

	cases := []struct {
		name  string
		chain []*x509.Certificate
		key   crypto.Signer
		want  string
	}{
		{"empty chain", nil, rootKey, "no certificate"},
		{"key mismatch", []*x509.Certificate{root}, otherKey, "key does not match"},
		{"pathlen zero signer", []*x509.Certificate{interPath0, root}, interKey, "path length 0"},
		{"no keyCertSign", []*x509.Certificate{interNoSign, root}, interKey, "keyCertSign"},
		{"missing root", []*x509.Certificate{inter}, interKey, "not a self-signed root"},
		{"wrong order", []*x509.Certificate{root, inter}, rootKey, "not signed by the next"},
		{"expired", []*x509.Certificate{expired}, expiredRootKey, "does not verify"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewAuthority(c.chain, c.key, Policy{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewAuthority error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestNewAuthorityAcceptsChain(t *testing.T) {
	root, rootKey := testRoot(t, keys.ECP384)
	interKey := p256(t)
	inter := signCA(t, root, rootKey, interKey.Public(), "inter", 1, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, time.Now().Add(5*365*24*time.Hour))
	a, err := NewAuthority([]*x509.Certificate{inter, root}, interKey, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Root() != root || a.Certificate() != inter || len(a.Chain()) != 2 {
		t.Fatalf("authority chain not kept as given")
	}
}
