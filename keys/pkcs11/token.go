package pkcs11

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.step.sm/crypto/kms/uri"

	"github.com/meshroot/meshroot/keys"
)

// maxPINFileSize bounds what is read from a pin-source file.
const maxPINFileSize = 4 << 10

// token is a parsed key manager URI: which module, which token, which PIN.
type token struct {
	module      string // module-path; empty means the p11-kit proxy
	selector    string // "token", "serial" or "slot-id"
	value       string // the token label, serial or slot number
	pin         string
	pinSource   string
	maxSessions string
}

// parseToken parses and checks a key manager URI and reads its PIN file.
func parseToken(raw string) (token, error) {
	if raw == "" {
		return token{}, errors.New("pkcs11 key manager: no URI given: want pkcs11:module-path=/path/to/module.so;token=LABEL?pin-source=/path/to/pin-file")
	}
	u, err := uri.ParseWithScheme(Scheme, raw)
	if err != nil {
		return token{}, fmt.Errorf("pkcs11 key manager: URI %q is not a pkcs11: URI (%v): want pkcs11:module-path=/path/to/module.so;token=LABEL?pin-source=/path/to/pin-file", redact(raw), err)
	}
	t := token{module: u.Get("module-path"), maxSessions: u.Get("max-sessions")}
	var sel []string
	for _, k := range []string{"token", "serial", "slot-id"} {
		if u.Has(k) {
			sel = append(sel, k)
			t.selector, t.value = k, u.Get(k)
		}
	}
	switch {
	case len(sel) == 0:
		return token{}, fmt.Errorf("pkcs11 key manager: URI %q names no token: add token=LABEL (or serial= or slot-id=)", redact(raw))
	case len(sel) > 1:
		return token{}, fmt.Errorf("pkcs11 key manager: URI %q names the token more than one way (%s): keep one", redact(raw), strings.Join(sel, ", "))
	case t.value == "":
		return token{}, fmt.Errorf("pkcs11 key manager: URI %q has an empty %s", redact(raw), t.selector)
	}
	if t.selector == "slot-id" {
		if _, err := strconv.Atoi(t.value); err != nil {
			return token{}, fmt.Errorf("pkcs11 key manager: URI %q: slot-id %q is not a number", redact(raw), t.value)
		}
	}
	if t.maxSessions != "" {
		if n, err := strconv.Atoi(t.maxSessions); err != nil || n < 2 {
			return token{}, fmt.Errorf("pkcs11 key manager: URI %q: max-sessions %q must be a number of at least 2", redact(raw), t.maxSessions)
		}
	}
	if u.Has("id") || u.Has("object") {
		return token{}, fmt.Errorf("pkcs11 key manager: URI %q names a key object (id= or object=): the key manager URI names only the module, the token and the PIN; keys are named by CreateKey", redact(raw))
	}
	t.pinSource = u.Get("pin-source")
	pinValue := u.Get("pin-value")
	switch {
	case t.pinSource != "" && u.Has("pin-value"):
		return token{}, fmt.Errorf("pkcs11 key manager: URI %q has both pin-value and pin-source: keep pin-source", redact(raw))
	case t.pinSource != "":
		pin, err := readPIN(t.pinSource)
		if err != nil {
			return token{}, err
		}
		t.pin = pin
	default:
		t.pin = pinValue
	}
	return t, nil
}

// readPIN reads a PIN file, trimming trailing white space.
func readPIN(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("pkcs11 key manager: PIN file %s (pin-source) does not exist: create it with the token's user PIN, mode 0600", path)
		}
		return "", fmt.Errorf("pkcs11 key manager: cannot read PIN file %s (pin-source): %v", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPINFileSize+1))
	if err != nil {
		return "", fmt.Errorf("pkcs11 key manager: cannot read PIN file %s (pin-source): %v", path, err)
	}
	if len(b) > maxPINFileSize {
		return "", fmt.Errorf("pkcs11 key manager: PIN file %s (pin-source) is larger than %d bytes: it should hold only the PIN", path, maxPINFileSize)
	}
	pin := string(bytes.TrimRight(b, " \t\r\n"))
	if pin == "" {
		return "", fmt.Errorf("pkcs11 key manager: PIN file %s (pin-source) is empty: write the token's user PIN into it", path)
	}
	return pin, nil
}

// checkModule reports a module file that is not there, before dlopen gives
// a vaguer error. A bare file name is left to the dynamic loader's search.
func (t token) checkModule() error {
	if t.module == "" || !strings.Contains(t.module, "/") {
		return nil
	}
	info, err := os.Stat(t.module)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint := "install the HSM vendor's PKCS#11 library or fix module-path in the URI"
		if filepath.Base(t.module) == filepath.Base(SoftHSM2Module) {
			hint = "install SoftHSM2 (apt-get install softhsm2) or fix module-path in the URI"
		}
		return fmt.Errorf("pkcs11 key manager: PKCS#11 module %s not found: %s", t.module, hint)
	case err != nil:
		return fmt.Errorf("pkcs11 key manager: PKCS#11 module %s: %v", t.module, err)
	case info.IsDir():
		return fmt.Errorf("pkcs11 key manager: PKCS#11 module %s is a folder: module-path must name the module's .so file", t.module)
	}
	return nil
}

// moduleName is the module file the dynamic loader is asked for.
func (t token) moduleName() string {
	if t.module == "" {
		return "p11-kit-proxy.so"
	}
	return t.module
}

// loginKey identifies the token within the process.
func (t token) loginKey() string {
	return filepath.Clean(t.module) + "\x00" + t.selector + "\x00" + t.value
}

// String names the token for error messages.
func (t token) String() string {
	mod := t.module
	if mod == "" {
		mod = "the p11-kit proxy module"
	}
	name := "token " + strconv.Quote(t.value)
	if t.selector != "token" {
		name = "token with " + t.selector + " " + t.value
	}
	return name + " (module " + mod + ")"
}

// kmsURI is the URI handed to step's kms: module and token, no PIN (the
// PIN goes in apiv1.Options.Pin, so it never sits in a URI string).
func (t token) kmsURI() string {
	var b strings.Builder
	b.WriteString(Scheme + ":")
	if t.module != "" {
		writeAttr(&b, "module-path", t.module)
	}
	writeAttr(&b, t.selector, t.value)
	if t.maxSessions != "" {
		writeAttr(&b, "max-sessions", t.maxSessions)
	}
	return b.String()
}

// objectURI is the URI of a key object in the token. A reference (withPIN
// set) also carries the pin-source, never a pin-value.
func (t token) objectURI(id []byte, label string, withPIN bool) string {
	var b strings.Builder
	b.WriteString(t.kmsURI())
	if len(id) > 0 {
		writeAttr(&b, "id", idHex(id))
	}
	if label != "" {
		writeAttr(&b, "object", label)
	}
	if withPIN && t.pinSource != "" {
		b.WriteString("?pin-source=")
		b.WriteString(escape(t.pinSource))
	}
	return b.String()
}

// parseRef parses a key reference and checks that it names this token.
func (t token) parseRef(ref string) (id, label []byte, err error) {
	u, err := uri.ParseWithScheme(Scheme, ref)
	if err != nil {
		return nil, nil, fmt.Errorf("pkcs11 key manager: key reference %q is not a pkcs11: URI: want pkcs11:...;id=HEX;object=NAME", redact(ref))
	}
	// The module is pinned to the configuration: a reference (read back
	// from the store, which is not trusted to choose code to load) may
	// only repeat the configured module.
	if m := u.Get("module-path"); m != "" && (t.module == "" || filepath.Clean(m) != filepath.Clean(t.module)) {
		return nil, nil, keys.NotConfigured(fmt.Errorf("pkcs11 key manager: key %s names PKCS#11 module %s, but the configured module is %s: meshroot loads only the configured module; if the key really is in %s, configure that module (--key pkcs11:module-path=%s;token=...)", redact(ref), m, t.moduleName(), m, m))
	}
	for _, k := range []string{"token", "serial", "slot-id"} {
		if v := u.Get(k); v != "" && (k != t.selector || v != t.value) {
			return nil, nil, fmt.Errorf("pkcs11 key manager: key %s is in the token with %s %q, but this key manager uses %s: configure a key manager for that token", redact(ref), k, v, t)
		}
	}
	id, label = u.GetEncoded("id"), []byte(u.Get("object"))
	if len(id) == 0 && len(label) == 0 {
		return nil, nil, fmt.Errorf("pkcs11 key manager: key reference %q names no key object: add id=HEX, object=LABEL or both", redact(ref))
	}
	return id, label, nil
}

// keyName describes a key object for error messages.
func keyName(id, label []byte) string {
	switch {
	case len(label) > 0 && len(id) > 0:
		return fmt.Sprintf("key %q (id %s)", label, idHex(id))
	case len(label) > 0:
		return fmt.Sprintf("key %q", label)
	}
	return "key with id " + idHex(id)
}

// idHex formats a CKA_ID for a URI.
func idHex(id []byte) string { return hex.EncodeToString(id) }

func writeAttr(b *strings.Builder, k, v string) {
	if s := b.String(); !strings.HasSuffix(s, ":") {
		b.WriteByte(';')
	}
	b.WriteString(k)
	b.WriteByte('=')
	b.WriteString(escape(v))
}

// escape percent-encodes a URI attribute value, keeping letters, digits,
// "-._~" and the "/" and ":" of paths readable.
func escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/', c == ':':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

var pinValue = regexp.MustCompile(`pin-value=[^;&?]*`)

// redact hides any pin-value in a URI shown in an error.
func redact(raw string) string {
	return pinValue.ReplaceAllString(raw, "pin-value=REDACTED")
}
