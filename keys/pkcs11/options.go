package pkcs11

import (
	"errors"
	"fmt"

	"github.com/meshroot/meshroot/keys"
)

// Scheme starts every URI and reference this key manager takes.
const Scheme = "pkcs11"

// SoftHSM2Module is where Debian and Ubuntu install SoftHSM2's PKCS#11
// module (apt-get install softhsm2).
const SoftHSM2Module = "/usr/lib/softhsm/libsofthsm2.so"

// ErrNoCgo is returned by New in a binary built without cgo (or with the
// nopkcs11 tag): PKCS#11 modules are C libraries.
var ErrNoCgo = errors.New("pkcs11 key manager: pkcs11 needs a cgo build: this binary was built with CGO_ENABLED=0 or the nopkcs11 tag; rebuild with CGO_ENABLED=1 (and a C compiler), or use another key manager")

// Options configure a PKCS#11 KeyManager.
type Options struct {
	// URI names the module, the token and the PIN source, for example
	// "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=meshroot?pin-source=/etc/meshroot/hsm-pin".
	URI string
}

func checkName(name string) error {
	if err := keys.CheckKeyName(name); err != nil {
		return fmt.Errorf("pkcs11 key manager: %w", err)
	}
	return nil
}
