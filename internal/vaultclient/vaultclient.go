// Package vaultclient connects meshroot's Vault backends (the Transit key
// manager and the PKI upstream) to HashiCorp Vault: address, namespace,
// TLS, authentication by token, AppRole or Kubernetes, token renewal, and
// errors that say which path failed and what to check.
//
// Configuration comes only from Config: unlike the Vault CLI, the client
// does not read VAULT_ADDR, VAULT_TOKEN, VAULT_SKIP_VERIFY or other
// environment variables, so what a CA trusts is always explicit.
//
// A renewable token is kept alive with the API's LifetimeWatcher. When it
// can no longer be renewed (its max TTL is near, or Vault was unreachable
// until it expired), the client logs in again with AppRole or Kubernetes,
// or re-reads the token file. A request answered "permission denied"
// because the token has become invalid is retried once after a new login.
package vaultclient

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshroot/meshroot/internal/vaultconf"
)

// The settings live in package vaultconf, which has no dependencies, so
// that packages which only carry them (the key catalog) stay light.
type (
	// Config says where Vault is and how to log in.
	Config = vaultconf.Config
	// TLS configures how Vault's server certificate is checked.
	TLS = vaultconf.TLS
	// Auth says how to log in to Vault.
	Auth = vaultconf.Auth
)

// Auth methods.
const (
	AuthToken      = vaultconf.AuthToken
	AuthAppRole    = vaultconf.AuthAppRole
	AuthKubernetes = vaultconf.AuthKubernetes
)

// DefaultKubernetesJWTFile is where Kubernetes mounts a pod's
// service-account token.
const DefaultKubernetesJWTFile = vaultconf.DefaultKubernetesJWTFile

// Client is an authenticated Vault client. It is safe for concurrent use.
type Client struct {
	api       *api.Client
	component string // "vault-transit key manager", for errors
	cfg       Config
	log       *slog.Logger

	loginMu sync.Mutex // serialises logins
	stop    context.CancelFunc
	done    chan struct{}
}

// New connects to Vault and logs in. component names the caller in errors
// ("vault-transit key manager"). A renewable token is renewed in the
// background until Close.
func New(ctx context.Context, component string, cfg Config) (*Client, error) {
	if err := cfg.Validate(component); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a, err := newAPI(component, cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{api: a, component: component, cfg: cfg, log: cfg.Logger}
	auth, err := c.login(ctx)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	c.stop, c.done = cancel, make(chan struct{})
	go c.keepAlive(rctx, auth)
	return c, nil
}

// API returns the underlying Vault API client, logged in.
func (c *Client) API() *api.Client { return c.api }

// Address is Vault's address.
func (c *Client) Address() string { return c.api.Address() }

// Close stops token renewal. It does not revoke the token.
func (c *Client) Close() {
	if c.stop != nil {
		c.stop()
		<-c.done
	}
}

// Read reads path. A missing path gives (nil, nil), as in the Vault API.
func (c *Client) Read(ctx context.Context, what, path string) (*api.Secret, error) {
	return c.do(ctx, what, path, "read", func() (*api.Secret, error) {
		return c.api.Logical().ReadWithContext(ctx, path)
	})
}

// List lists path. A missing path gives (nil, nil).
func (c *Client) List(ctx context.Context, what, path string) (*api.Secret, error) {
	return c.do(ctx, what, path, "list", func() (*api.Secret, error) {
		return c.api.Logical().ListWithContext(ctx, path)
	})
}

// Write writes data to path.
func (c *Client) Write(ctx context.Context, what, path string, data map[string]any) (*api.Secret, error) {
	return c.do(ctx, what, path, "update", func() (*api.Secret, error) {
		return c.api.Logical().WriteWithContext(ctx, path, data)
	})
}

// do runs f, and once more after a new login when Vault refused a token
// that turns out to be no longer valid.
func (c *Client) do(ctx context.Context, what, path, capability string, f func() (*api.Secret, error)) (*api.Secret, error) {
	s, err := f()
	if err == nil {
		return s, nil
	}
	if isStatus(err, http.StatusForbidden) && c.canRelogin() && !c.tokenValid(ctx) {
		c.log.Info("vault token is no longer valid: logging in again", "component", c.component)
		if _, lerr := c.login(ctx); lerr == nil {
			if s, err = f(); err == nil {
				return s, nil
			}
		}
	}
	return nil, c.explain(what, path, capability, err)
}

// tokenValid reports whether Vault still accepts the current token.
func (c *Client) tokenValid(ctx context.Context) bool {
	_, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
	return err == nil
}
