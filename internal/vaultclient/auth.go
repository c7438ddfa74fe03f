package vaultclient

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"
)

// maxSecretFileSize bounds token, secret-id and JWT files.
const maxSecretFileSize = 64 << 10

// login obtains a token with the configured method and returns its auth
// data (nil for a token that does not expire).
func (c *Client) login(ctx context.Context) (*api.SecretAuth, error) {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	a := c.cfg.Auth
	switch a.MethodName() {
	case AuthToken:
		tok := a.Token
		if a.TokenFile != "" {
			b, err := readSecretFile(a.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("%s: Vault token file: %w", c.component, err)
			}
			tok = b
		}
		c.api.SetToken(tok)
		s, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, c.explain("look up the Vault token", "auth/token/lookup-self", "read", err)
		}
		ttl, _ := s.TokenTTL()
		renewable, _ := s.TokenIsRenewable()
		if ttl == 0 {
			return nil, nil
		}
		return &api.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}, nil
	case AuthAppRole:
		secretID, err := readSecretFile(a.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("%s: AppRole secret_id file: %w", c.component, err)
		}
		return c.loginWith(ctx, map[string]any{"role_id": a.RoleID, "secret_id": secretID})
	case AuthKubernetes:
		file := a.JWTFile
		if file == "" {
			file = DefaultKubernetesJWTFile
		}
		jwt, err := readSecretFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: Kubernetes service-account token: %w", c.component, err)
		}
		return c.loginWith(ctx, map[string]any{"role": a.Role, "jwt": jwt})
	}
	return nil, fmt.Errorf("%s: Vault auth method %q is not supported", c.component, a.Method)
}

func (c *Client) loginWith(ctx context.Context, data map[string]any) (*api.SecretAuth, error) {
	path := "auth/" + c.cfg.Auth.MountPath() + "/login"
	// Log in without a token: a stale one must not be sent along.
	lc, err := c.api.Clone()
	if err != nil {
		return nil, fmt.Errorf("%s: Vault login: %v", c.component, err)
	}
	lc.ClearToken()
	if ns := c.api.Namespace(); ns != "" {
		lc.SetNamespace(ns)
	}
	s, err := lc.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, c.explain("log in to Vault with "+c.cfg.Auth.MethodName(), path, "login", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%s: Vault login at %s returned no token", c.component, path)
	}
	c.api.SetToken(s.Auth.ClientToken)
	return s.Auth, nil
}

// canRelogin reports whether a new token can be obtained without help.
func (c *Client) canRelogin() bool {
	return c.cfg.Auth.MethodName() != AuthToken || c.cfg.Auth.TokenFile != ""
}

// readSecretFile reads a small secret file and trims trailing white space.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFileSize {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxSecretFileSize)
	}
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
