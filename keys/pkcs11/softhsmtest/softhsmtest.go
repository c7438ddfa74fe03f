// Package softhsmtest gives tests a real PKCS#11 token: SoftHSM2 with a
// throwaway configuration and token folder per test.
//
// NewToken installs SoftHSM2 with apt-get when its module is missing (once
// per machine; it skips the test, naming the install command, only where
// apt-get does not exist), points SOFTHSM2_CONF at a fresh folder with
// t.Setenv (so a test that uses it cannot run in parallel), and initialises
// a token there with softhsm2-util.
//
// SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, and crypto11
// keeps one initialised module per process while any context is open: close
// every key manager (t.Cleanup) before the next test makes its token.
package softhsmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Module is where Debian installs SoftHSM2's PKCS#11 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Default token credentials, as in TESTING.md.
const (
	DefaultLabel = "meshroot"
	DefaultPIN   = "1234"
	DefaultSOPIN = "5678"
)

// Token is an initialised SoftHSM2 token in a throwaway folder.
type Token struct {
	// Dir holds the configuration, the token folder and the PIN file.
	Dir string
	// Conf is the SOFTHSM2_CONF file in Dir.
	Conf string
	// Label, PIN and SOPIN are the token's label and PINs.
	Label, PIN, SOPIN string
	// PINFile holds PIN, for pin-source.
	PINFile string
}

// URI is the key manager URI for the token, with the PIN in PINFile.
func (tok *Token) URI() string {
	return fmt.Sprintf("pkcs11:module-path=%s;token=%s?pin-source=%s", Module, tok.Label, tok.PINFile)
}

// URIWithPIN is the key manager URI for the token with pin as pin-value.
func (tok *Token) URIWithPIN(pin string) string {
	return fmt.Sprintf("pkcs11:module-path=%s;token=%s?pin-value=%s", Module, tok.Label, pin)
}

// Util runs softhsm2-util with the token's configuration and returns its
// combined output.
func (tok *Token) Util(args ...string) (string, error) {
	cmd := exec.Command("softhsm2-util", args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+tok.Conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("softhsm2-util %v: %v: %s", args, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Delete removes the token (softhsm2-util --delete-token), as if it were
// pulled out of the HSM.
func (tok *Token) Delete(t testing.TB) {
	t.Helper()
	if _, err := tok.Util("--delete-token", "--token", tok.Label); err != nil {
		t.Fatal(err)
	}
}

// NewToken creates a throwaway SoftHSM2 configuration, sets SOFTHSM2_CONF
// for the rest of the test, and initialises a token labelled "meshroot"
// with PIN 1234 and SO PIN 5678.
func NewToken(t testing.TB) *Token {
	t.Helper()
	Ensure(t)
	dir := t.TempDir()
	tok := &Token{
		Dir:     dir,
		Conf:    filepath.Join(dir, "softhsm2.conf"),
		Label:   DefaultLabel,
		PIN:     DefaultPIN,
		SOPIN:   DefaultSOPIN,
		PINFile: filepath.Join(dir, "pin"),
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(tok.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	if _, err := tok.Util("--init-token", "--free", "--label", tok.Label, "--pin", tok.PIN, "--so-pin", tok.SOPIN); err != nil {
		t.Fatal(err)
	}
	return tok
}

var installMu sync.Mutex

// Ensure installs SoftHSM2 with apt-get when its module is missing. It
// skips the test only when apt-get is not available.
func Ensure(t testing.TB) {
	t.Helper()
	installMu.Lock()
	defer installMu.Unlock()
	if haveSoftHSM() {
		return
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skipf("SoftHSM2 is not installed and apt-get is missing: install it (apt-get install -y softhsm2) to run the PKCS#11 tests")
	}
	t.Logf("installing SoftHSM2: apt-get install -y softhsm2")
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "softhsm2")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := install()
	if err != nil {
		// The package lists may be missing on a fresh machine.
		if upd, uerr := exec.Command("apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300").CombinedOutput(); uerr != nil {
			t.Fatalf("apt-get update: %v\n%s", uerr, upd)
		}
		out, err = install()
	}
	if err != nil || !haveSoftHSM() {
		t.Fatalf("apt-get install -y softhsm2 failed: %v\n%s", err, out)
	}
}

func haveSoftHSM() bool {
	if _, err := os.Stat(Module); err != nil {
		return false
	}
	_, err := exec.LookPath("softhsm2-util")
	return err == nil
}
