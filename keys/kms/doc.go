// Package kms is the key manager for keys held by a cloud key management
// system that go.step.sm/crypto/kms reaches: AWS KMS, Google Cloud KMS and
// Azure Key Vault. The kind of KMS comes from the URI scheme; the package
// registers the three schemes with the key catalog (package keys).
//
// go.step.sm's softkms and pkcs11 URIs are not served here: softkms: is a
// scheme of package disk (the same PEM files), pkcs11: of package pkcs11.
//
// # Key manager URIs (Options.URI)
//
//	awskms:region=eu-west-1[;profile=NAME][;credentials-file=/path]
//	    AWS KMS; credentials as the AWS SDK finds them (environment,
//	    shared files, instance role)
//	cloudkms:key-ring=projects/P/locations/L/keyRings/R[;credentials-file=/path][;protection-level=hsm]
//	    Google Cloud KMS; the key ring is created when missing
//	azurekms:vault=VAULT[;environment=AzurePublicCloud][;hsm=true][;client-id=..;tenant-id=..;client-secret=..]
//	    Azure Key Vault; credentials as the Azure SDK finds them unless given
//
// # Key references (Key.Ref, the argument of Signer)
//
//	awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab
//	cloudkms:projects/P/locations/L/keyRings/R/cryptoKeys/NAME/cryptoKeyVersions/1
//	azurekms:name=NAME;vault=VAULT?version=VERSION
//
// A reference must use the same scheme as the key manager URI, and is only
// loaded through a configured key manager of that scheme: the account and
// credentials come from the configuration, never from a stored reference.
//
// Cloud clients are created on first use, not by New, so a configuration can
// be checked without network access. Signatures made by a remote KMS are
// verified against the key's public key before they are returned. The cloud
// KMS APIs that step exposes cannot search, so ListKeys returns an error
// wrapping errors.ErrUnsupported.
//
// The cloud backends and their SDKs (about 28 MB of binary together) are
// linked by meshroot-plugin only: meshroot reaches them through it
// (internal/pluginhost), so that the server's own binary stays small.
package kms
