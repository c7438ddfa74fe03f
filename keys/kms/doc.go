// Package kms is the key manager for keys held by any key management system
// that go.step.sm/crypto/kms reaches: a software KMS for development, AWS
// KMS, Google Cloud KMS, Azure Key Vault, and PKCS#11 HSMs (delegated to the
// pkcs11 key manager). The kind of KMS comes from the URI scheme.
//
// # Key manager URIs (Options.URI)
//
//	softkms:dir=/var/lib/meshroot/softkms
//	    keys as PKCS#8 PEM files in dir, encrypted with Options.Passphrase
//	    (development and tests; prefer the disk key manager)
//	awskms:region=eu-west-1[;profile=NAME][;credentials-file=/path]
//	    AWS KMS; credentials as the AWS SDK finds them (environment,
//	    shared files, instance role)
//	cloudkms:key-ring=projects/P/locations/L/keyRings/R[;credentials-file=/path][;protection-level=hsm]
//	    Google Cloud KMS; the key ring is created when missing
//	azurekms:vault=VAULT[;environment=AzurePublicCloud][;hsm=true][;client-id=..;tenant-id=..;client-secret=..]
//	    Azure Key Vault; credentials as the Azure SDK finds them unless given
//	pkcs11:module-path=/path/module.so;token=LABEL?pin-source=/path/pin
//	    an HSM through PKCS#11 (see package pkcs11)
//
// # Key references (Key.Ref, the argument of Signer)
//
//	softkms:path=/var/lib/meshroot/softkms/NAME.key.pem
//	awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab
//	cloudkms:projects/P/locations/L/keyRings/R/cryptoKeys/NAME/cryptoKeyVersions/1
//	azurekms:name=NAME;vault=VAULT?version=VERSION
//	pkcs11:module-path=...;token=LABEL;id=HEX;object=NAME?pin-source=/path/pin
//
// A reference must use the same scheme as the key manager URI.
//
// Cloud clients are created on first use, not by New, so a configuration can
// be checked without network access. Signatures made by a remote KMS are
// verified against the key's public key before they are returned. ListKeys
// works for softkms and pkcs11; the cloud KMS APIs that step exposes cannot
// search, so there it returns an error wrapping errors.ErrUnsupported.
//
// The cloud backends, and their SDKs (about 28 MB of binary together), can
// be left out with the build tags noawskms, nocloudkms and noazurekms; New
// then reports that the binary lacks them.
package kms
