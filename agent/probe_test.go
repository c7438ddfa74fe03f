package agent

import (
	"encoding/pem"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestParseCertChain reads IstioCertificateResponse as istiod encodes it:
// repeated string cert_chain (field 1), leaf first; unknown fields are
// skipped and a truncated message is an error.
func TestParseCertChain(t *testing.T) {
	leaf, inter := testCert(t), testCert(t)
	var b []byte
	b = protowire.AppendTag(b, 7, protowire.VarintType) // a field this agent does not know
	b = protowire.AppendVarint(b, 42)
	for _, c := range []*x509Cert{leaf, inter} {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	chain, err := parseCertChain(b)
	if err != nil || len(chain) != 2 || !chain[0].Equal(leaf) || !chain[1].Equal(inter) {
		t.Fatalf("parseCertChain = %d certificates, %v; want leaf then intermediate", len(chain), err)
	}
	if _, err := parseCertChain(b[:len(b)-3]); err == nil {
		t.Error("a truncated response parsed")
	}
}
