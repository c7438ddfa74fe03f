// Package pkcs11 is the key manager that keeps meshroot's CA keys inside a
// hardware security module (or SoftHSM2) through PKCS#11. Keys are generated
// in the token and never leave it: Signer returns a crypto.Signer whose Sign
// runs in the token.
//
// It is built on go.step.sm/crypto/kms/pkcs11 and needs cgo (the PKCS#11
// module is a shared library loaded with dlopen). A binary built with
// CGO_ENABLED=0, or with the nopkcs11 build tag, still compiles: New then
// returns ErrNoCgo.
//
// # URIs
//
// The key manager is configured with an RFC 7512 PKCS#11 URI that names the
// module, the token and where the PIN comes from:
//
//	pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=meshroot?pin-source=/etc/meshroot/hsm-pin
//	pkcs11:module-path=/opt/hsm/lib/libcs_pkcs11_R3.so;serial=1a2b3c4d?pin-source=/run/secrets/pin
//	pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;slot-id=0?pin-value=1234   (tests only)
//
// Exactly one of token (the token label), serial or slot-id selects the
// token. pin-source names a file holding the user PIN (trailing white space
// is ignored); pin-value carries the PIN itself and is meant for tests.
// max-sessions caps the PKCS#11 sessions opened.
//
// Each key is a key pair with CKA_LABEL set to the meshroot key name and a
// random 16-byte CKA_ID. Its reference, which Signer takes, is a full
// PKCS#11 URI of the private key object, without any PIN value:
//
//	pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=meshroot;id=5f0c...;object=root-1?pin-source=/etc/meshroot/hsm-pin
//
// A reference made elsewhere (by pkcs11-tool, say) works too, as long as it
// names the same token and carries id, object or both.
//
// The module is pinned to the configuration. A key manager is only opened
// from a configured URI (--key, keys.create): the package registers the
// "pkcs11" scheme with the key catalog, and refuses to derive a key manager
// from a stored reference alone. A reference that names another
// module-path than the configured one is refused with keys.ErrNotConfigured
// before anything is loaded, so whoever can edit stored references cannot
// have meshroot dlopen a library of their choosing.
package pkcs11
