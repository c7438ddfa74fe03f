// Package stepkms holds what meshroot's backends built on
// go.step.sm/crypto/kms (pkcs11 and the cloud KMSes in kms) share: the
// mapping from meshroot key types to step's signature algorithms.
package stepkms

import (
	"fmt"

	"go.step.sm/crypto/kms/apiv1"

	"github.com/meshroot/meshroot/keys"
)

// SignatureAlgorithm maps a key type to step's algorithm and RSA size.
// label names the key manager in the error ("pkcs11 key manager").
func SignatureAlgorithm(label string, kt keys.KeyType) (apiv1.SignatureAlgorithm, int, error) {
	switch kt {
	case keys.ECP256:
		return apiv1.ECDSAWithSHA256, 0, nil
	case keys.ECP384:
		return apiv1.ECDSAWithSHA384, 0, nil
	case keys.RSA2048:
		return apiv1.SHA256WithRSA, 2048, nil
	case keys.RSA3072:
		return apiv1.SHA256WithRSA, 3072, nil
	case keys.RSA4096:
		return apiv1.SHA256WithRSA, 4096, nil
	}
	return 0, 0, fmt.Errorf("%s: key type %q is not supported: use one of %v", label, kt, keys.KeyTypes)
}
