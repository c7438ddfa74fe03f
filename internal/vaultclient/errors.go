package vaultclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"
)

func isStatus(err error, code int) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}

// IsNotFound reports whether err is Vault's 404.
func IsNotFound(err error) bool { return isStatus(err, http.StatusNotFound) }

// IsPermissionDenied reports whether err is Vault's 403.
func IsPermissionDenied(err error) bool { return isStatus(err, http.StatusForbidden) }

// IsSealed reports whether err says Vault is sealed.
func IsSealed(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.Join(re.Errors, " "), "sealed")
}

// Error is a failed Vault request, explained.
type Error struct {
	// Component names the meshroot backend ("vault-transit key manager").
	Component string
	// What is the operation ("sign with key root").
	What string
	// Path is the Vault API path, without /v1/.
	Path string
	// Hint says what to check.
	Hint string
	// Err is the Vault API's error.
	Err error
}

// Error says what failed, where, and what to check.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: Vault %s: %s", e.Component, e.What, e.Path, e.Hint)
}

// Unwrap returns the Vault API's error.
func (e *Error) Unwrap() error { return e.Err }

// explain turns a Vault API error into one that names the backend, the
// path and what to check.
func (c *Client) explain(what, path, capability string, err error) error {
	addr := c.api.Address()
	e := &Error{Component: c.component, What: what, Path: path, Err: err}
	var re *api.ResponseError
	switch {
	case err == nil:
		e.Hint = "no error"
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		e.Hint = fmt.Sprintf("no answer from %s in time (%v): check that Vault is up and reachable", addr, err)
	case IsSealed(err):
		e.Hint = fmt.Sprintf("Vault at %s is sealed: unseal it (vault operator unseal) and retry", addr)
	case errors.As(err, &re):
		msg := vaultMessage(re.Errors)
		switch code := re.StatusCode; {
		case code == http.StatusForbidden && capability == "login":
			e.Hint = fmt.Sprintf("Vault refused the login (%s): check the auth mount, the role, and the credentials (role_id and secret_id, or the service account bound to the role)", msg)
		case code == http.StatusForbidden:
			detail := ""
			if msg != "permission denied" && msg != "no details" {
				detail = " (" + msg + ")"
			}
			e.Hint = fmt.Sprintf("permission denied%s: the token's policy must grant %q on %q (or the token has expired)", detail, capability, path)
		case code == http.StatusNotFound:
			e.Hint = fmt.Sprintf("not found (%s): check the mount path and the name, and that the secrets engine is enabled there", msg)
		case code == http.StatusBadRequest:
			e.Hint = fmt.Sprintf("Vault refused the request: %s", msg)
		case code == http.StatusServiceUnavailable:
			e.Hint = fmt.Sprintf("Vault at %s is unavailable (%s): check its health (vault status)", addr, msg)
		default:
			e.Hint = fmt.Sprintf("Vault answered %d: %s", code, msg)
		}
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:"):
		e.Hint = fmt.Sprintf("TLS to %s failed (%v): check the CA file, the server name and the client certificate", addr, err)
	default:
		e.Hint = fmt.Sprintf("cannot reach Vault at %s (%v): check the address, that Vault is running, and the network", addr, err)
	}
	return e
}

var errorCount = regexp.MustCompile(`^\d+ errors? occurred:\s*`)

// vaultMessage flattens Vault's error strings ("1 error occurred:\n\t*
// permission denied\n\n") into one line.
func vaultMessage(errs []string) string {
	var parts []string
	for _, e := range errs {
		e = errorCount.ReplaceAllString(strings.TrimSpace(e), "")
		for _, line := range strings.Split(e, "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
			if line != "" {
				parts = append(parts, line)
			}
		}
	}
	if len(parts) == 0 {
		return "no details"
	}
	return strings.Join(parts, "; ")
}
