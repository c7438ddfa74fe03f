package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
)

func TestParseKeyType(t *testing.T) {
	if kt, err := ParseKeyType(""); err != nil || kt != ECP256 {
		t.Errorf("empty: %v, %v; want the default ec-p256", kt, err)
	}
	if kt, err := ParseKeyType("RSA-3072"); err != nil || kt != RSA3072 {
		t.Errorf("RSA-3072: %v, %v", kt, err)
	}
	for _, bad := range []string{"ed25519", "rsa-1024", "ec-p521", "x"} {
		if _, err := ParseKeyType(bad); err == nil || !strings.Contains(err.Error(), "use one of") {
			t.Errorf("%s: error %v, want a refusal listing the choices", bad, err)
		}
	}
}

func TestGenerateAndKeyTypeOf(t *testing.T) {
	for _, kt := range []KeyType{ECP256, ECP384, RSA2048} {
		s, err := kt.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := KeyTypeOf(s.Public()); err != nil || got != kt {
			t.Errorf("KeyTypeOf(Generate(%s)) = %s, %v", kt, got, err)
		}
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, pub := range map[string]any{"p224": &p224.PublicKey, "rsa1024": &rsa1024.PublicKey, "ed25519": edPub, "nil": nil} {
		if _, err := KeyTypeOf(pub); err == nil {
			t.Errorf("%s: accepted for a CA", name)
		}
	}
}
