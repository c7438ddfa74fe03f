package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/meshroot/meshroot/keys"
)

// MaxCSRSize bounds a CSR as received, PEM or DER (an RSA-4096 CSR is ~1.7 KiB).
const MaxCSRSize = 16 << 10

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
)

// grantedKeyUsage is what a cluster intermediate receives.
const grantedKeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature

// ParseCSR parses a PKCS#10 request given as one PEM block ("CERTIFICATE
// REQUEST") or as DER, and verifies its self-signature. It bounds the input
// to MaxCSRSize.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	csr, err := parseCSR(data)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature is invalid: %v", err)
	}
	return csr, nil
}

// parseCSR is ParseCSR without the signature check, for callers that pass
// the CSR on to SignIntermediate, which checks it.
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) == 0 {
		return nil, errors.New("CSR is empty")
	}
	if len(data) > MaxCSRSize {
		return nil, fmt.Errorf("CSR is %d bytes: at most %d are accepted", len(data), MaxCSRSize)
	}
	der := data
	if bytes.Contains(data, []byte("-----BEGIN")) {
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, errors.New("CSR is not valid PEM")
		}
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("CSR PEM block is %q: want CERTIFICATE REQUEST", block.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("CSR holds more than one PEM block: send exactly one")
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		if len(der) == 0 || der[0] != 0x30 { // not an ASN.1 SEQUENCE: neither PEM nor DER
			return nil, errors.New("CSR cannot be parsed: it is neither PEM (CERTIFICATE REQUEST) nor DER")
		}
		return nil, fmt.Errorf("CSR cannot be parsed: %v", err)
	}
	return csr, nil
}

// checkCSR applies the policy to a parsed CSR: key type and size, and no
// requested extension beyond what the intermediate profile grants anyway.
func (p Policy) checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return errors.New("no CSR given")
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("CSR signature is invalid: %v", err)
	}
	kt, err := keys.KeyTypeOf(csr.PublicKey)
	if err != nil {
		return fmt.Errorf("CSR key: %w", err)
	}
	if !p.allowsKeyType(kt) {
		return fmt.Errorf("CSR key type %s is not allowed by the intermediate policy (allowed: %v)", kt, p.AllowedKeyTypes)
	}
	for _, ext := range csr.Extensions {
		if err := checkRequestedExtension(ext.Id, ext.Value); err != nil {
			return err
		}
	}
	return nil
}

// checkRequestedExtension accepts only extensions that ask for no more than
// the profile grants: basicConstraints CA:true with pathlen 0 or none,
// keyUsage within CertSign|CRLSign|DigitalSignature, and a subject key id
// (which meshroot computes itself).
func checkRequestedExtension(id asn1.ObjectIdentifier, value []byte) error {
	switch {
	case id.Equal(oidSubjectKeyID):
		return nil
	case id.Equal(oidBasicConstraints):
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if rest, err := asn1.Unmarshal(value, &bc); err != nil || len(rest) != 0 {
			return errors.New("CSR basicConstraints extension is malformed")
		}
		if !bc.IsCA {
			return errors.New("CSR requests basicConstraints CA:false: an intermediate is a CA; drop the extension")
		}
		if bc.MaxPathLen > 0 {
			return fmt.Errorf("CSR requests path length %d: cluster intermediates get pathlen 0; drop the extension", bc.MaxPathLen)
		}
		return nil
	case id.Equal(oidKeyUsage):
		var bits asn1.BitString
		if rest, err := asn1.Unmarshal(value, &bits); err != nil || len(rest) != 0 {
			return errors.New("CSR keyUsage extension is malformed")
		}
		var ku x509.KeyUsage
		for i := 0; i < 9; i++ {
			if bits.At(i) != 0 {
				ku |= 1 << uint(i)
			}
		}
		if ku&^grantedKeyUsage != 0 {
			return fmt.Errorf("CSR requests key usages %#x beyond certSign|cRLSign|digitalSignature: drop them", int(ku&^grantedKeyUsage))
		}
		return nil
	}
	return fmt.Errorf("CSR requests extension %s (%s), which the intermediate policy does not grant: remove it from the CSR", extensionName(id), id)
}

func extensionName(id asn1.ObjectIdentifier) string {
	names := map[string]string{
		"2.5.29.17":         "subjectAltName",
		"2.5.29.37":         "extKeyUsage",
		"2.5.29.30":         "nameConstraints",
		"2.5.29.32":         "certificatePolicies",
		"2.5.29.31":         "cRLDistributionPoints",
		"2.5.29.35":         "authorityKeyIdentifier",
		"1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
	}
	if n, ok := names[id.String()]; ok {
		return n
	}
	return "unknown extension"
}
