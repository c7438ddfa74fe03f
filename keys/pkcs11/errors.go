//go:build cgo && !nopkcs11

package pkcs11

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"
	"go.step.sm/crypto/kms/apiv1"

	"github.com/meshroot/meshroot/keys"
)

// crypto11Config is the crypto11 configuration for the token, for the
// listing session.
func (t token) crypto11Config() *crypto11.Config {
	cfg := &crypto11.Config{Path: t.module, Pin: t.pin}
	if cfg.Path == "" {
		cfg.Path = "p11-kit-proxy.so"
	}
	switch t.selector {
	case "token":
		cfg.TokenLabel = t.value
	case "serial":
		cfg.TokenSerial = t.value
	case "slot-id":
		n, _ := strconv.Atoi(t.value)
		cfg.SlotNumber = &n
	}
	if t.maxSessions != "" {
		cfg.MaxSessions, _ = strconv.Atoi(t.maxSessions)
	}
	if t.pin == "" {
		cfg.LoginNotSupported = true
	}
	return cfg
}

// openError explains a failure to load the module, find the token or log in.
func (t token) openError(err error) error {
	msg := err.Error()
	var code p11.Error
	if errors.As(err, &code) {
		if hint := codeHint(code, t); hint != "" {
			return fmt.Errorf("pkcs11 key manager: cannot open %s: %s (%v)", t, hint, code)
		}
	}
	switch {
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return fmt.Errorf("pkcs11 key manager: no %s: check the %s in the URI against the module's tokens (softhsm2-util --show-slots, pkcs11-tool --module %s -L) and that the HSM is connected", t, t.selector, t.moduleName())
	case strings.Contains(msg, "failed to open module"):
		return fmt.Errorf("pkcs11 key manager: cannot load PKCS#11 module %s: check module-path, that the file is a PKCS#11 library for this architecture, and its dependencies (ldd)", t.moduleName())
	case strings.Contains(msg, "failed to initialize module"):
		return fmt.Errorf("pkcs11 key manager: PKCS#11 module %s failed to initialize (%v): check the module's configuration (for SoftHSM2: SOFTHSM2_CONF and its tokendir)", t.moduleName(), err)
	}
	return fmt.Errorf("pkcs11 key manager: cannot open %s: %v", t, err)
}

// opError explains a failure of an operation on an open token.
func (t token) opError(what string, err error) error {
	var code p11.Error
	if errors.As(err, &code) {
		if hint := codeHint(code, t); hint != "" {
			return fmt.Errorf("pkcs11 key manager: %s in %s: %s (%v)", what, t, hint, code)
		}
		return fmt.Errorf("pkcs11 key manager: %s in %s: %v", what, t, err)
	}
	msg := err.Error()
	switch {
	case errors.Is(err, apiv1.NotFoundError{}) || strings.Contains(msg, "not found"):
		return keys.NotFound(fmt.Errorf("pkcs11 key manager: %s: no such key in %s: it was deleted, or the reference is wrong (list the token's keys with meshroot or pkcs11-tool --list-objects)", what, t))
	case errors.Is(err, apiv1.AlreadyExistsError{}):
		return fmt.Errorf("pkcs11 key manager: %s: the key already exists in %s", what, t)
	case strings.Contains(msg, "context is closed") || strings.Contains(msg, "closed Context"):
		return fmt.Errorf("pkcs11 key manager: %s: the session to %s is closed", what, t)
	}
	return fmt.Errorf("pkcs11 key manager: %s in %s: %v", what, t, err)
}

// codeHint says what to check for the PKCS#11 return codes an operator can
// act on.
func codeHint(code p11.Error, t token) string {
	switch code {
	case p11.CKR_PIN_INCORRECT:
		src := "pin-value"
		if t.pinSource != "" {
			src = "the PIN file " + t.pinSource
		}
		return "wrong PIN: check " + src + " (it must hold the token's user PIN, not the SO PIN)"
	case p11.CKR_PIN_LEN_RANGE, p11.CKR_PIN_INVALID:
		return "the PIN is not valid for this token (wrong length or characters): check the PIN file"
	case p11.CKR_PIN_LOCKED:
		return "the user PIN is locked after too many wrong attempts: unlock it with the SO PIN (softhsm2-util / pkcs11-tool --init-pin)"
	case p11.CKR_PIN_EXPIRED:
		return "the user PIN has expired: set a new one"
	case p11.CKR_USER_NOT_LOGGED_IN:
		return "not logged in: the token needs a PIN; add pin-source to the URI"
	case p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_DEVICE_REMOVED, p11.CKR_SLOT_ID_INVALID, p11.CKR_TOKEN_NOT_RECOGNIZED:
		return "the token is not present: check that the HSM is connected and the token still exists"
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED:
		return "the session to the token was lost (token removed or HSM restarted): check the HSM, then restart meshroot"
	case p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID:
		return "the key is no longer in the token: it was deleted or the token was replaced"
	case p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY, p11.CKR_GENERAL_ERROR:
		return "the HSM reported a device error: check the HSM's health and logs"
	case p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_MECHANISM_INVALID:
		return "the token does not support this key type or mechanism"
	}
	return ""
}
