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
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/vault/api"
)

// Auth methods.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
)

// DefaultKubernetesJWTFile is where Kubernetes mounts a pod's
// service-account token.
const DefaultKubernetesJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// maxSecretFileSize bounds token, secret-id and JWT files.
const maxSecretFileSize = 64 << 10

// Config says where Vault is and how to log in.
type Config struct {
	// Address is Vault's URL, for example "https://vault.example.com:8200".
	Address string
	// Namespace is the Vault Enterprise namespace; empty for none.
	Namespace string
	// TLS configures the connection when Address is https.
	TLS TLS
	// Auth says how to obtain a token.
	Auth Auth
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration
	// Logger receives renewal and re-login events (default: discarded).
	Logger *slog.Logger
}

// TLS configures how Vault's server certificate is checked and which client
// certificate is shown.
type TLS struct {
	// CAFile holds the PEM CA certificates that Vault's certificate must
	// chain to; empty uses the system roots.
	CAFile string
	// ClientCertFile and ClientKeyFile are a PEM client certificate and key
	// for Vault's TLS listener (tls_require_and_verify_client_cert).
	ClientCertFile, ClientKeyFile string
	// ServerName overrides the name checked in Vault's certificate.
	ServerName string
	// Insecure skips verification of Vault's certificate. For development
	// only: anyone on the path can then impersonate Vault.
	Insecure bool
}

// Auth says how to log in to Vault. Method defaults to "token".
type Auth struct {
	// Method is "token", "approle" or "kubernetes".
	Method string
	// Token is a Vault token (method token). Prefer TokenFile. The token
	// must be allowed to look itself up (auth/token/lookup-self, in
	// Vault's default policy), which tells its TTL for renewal.
	Token string
	// TokenFile holds a Vault token (method token); it is read again when
	// the token can no longer be renewed, as a Vault Agent sink rewrites it.
	TokenFile string
	// Mount is the auth method's mount path (default "approle" or
	// "kubernetes").
	Mount string
	// RoleID is the AppRole role_id (method approle).
	RoleID string
	// SecretIDFile holds the AppRole secret_id (method approle).
	SecretIDFile string
	// Role is the Vault role to log in as (method kubernetes).
	Role string
	// JWTFile holds the service-account token (method kubernetes; default
	// DefaultKubernetesJWTFile).
	JWTFile string
}

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
	if err := cfg.validate(component); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ac := &api.Config{
		Address:      strings.TrimRight(cfg.Address, "/"),
		HttpClient:   cleanhttp.DefaultPooledClient(),
		Timeout:      cfg.Timeout,
		MaxRetries:   2,
		MinRetryWait: 100 * time.Millisecond,
		MaxRetryWait: time.Second,
		CheckRetry:   retryPolicy,
	}
	ac.HttpClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ac.HttpClient.Transport.(*http.Transport).TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if err := ac.ConfigureTLS(&api.TLSConfig{
		CACert:        cfg.TLS.CAFile,
		ClientCert:    cfg.TLS.ClientCertFile,
		ClientKey:     cfg.TLS.ClientKeyFile,
		TLSServerName: cfg.TLS.ServerName,
		Insecure:      cfg.TLS.Insecure,
	}); err != nil {
		return nil, fmt.Errorf("%s: Vault TLS settings: %v: check the CA file and the client certificate and key", component, err)
	}
	a, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("%s: Vault client for %s: %v", component, cfg.Address, err)
	}
	// NewClient reads VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS from
	// the environment: undo that, the configuration is explicit.
	a.ClearToken()
	a.SetHeaders(http.Header{})
	if cfg.Namespace != "" {
		a.SetNamespace(cfg.Namespace)
	} else {
		a.ClearNamespace()
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

func (cfg Config) validate(component string) error {
	if cfg.Address == "" {
		return fmt.Errorf("%s: no Vault address given: set it, for example https://vault.example.com:8200", component)
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: Vault address %q is not an http(s) URL", component, cfg.Address)
	}
	a := cfg.Auth
	switch a.method() {
	case AuthToken:
		if a.Token == "" && a.TokenFile == "" {
			return fmt.Errorf("%s: Vault token auth needs a token or a token file", component)
		}
		if a.Token != "" && a.TokenFile != "" {
			return fmt.Errorf("%s: Vault token auth takes a token or a token file, not both", component)
		}
	case AuthAppRole:
		if a.RoleID == "" || a.SecretIDFile == "" {
			return fmt.Errorf("%s: Vault AppRole auth needs a role_id and a secret_id file", component)
		}
	case AuthKubernetes:
		if a.Role == "" {
			return fmt.Errorf("%s: Vault Kubernetes auth needs the Vault role to log in as", component)
		}
	default:
		return fmt.Errorf("%s: Vault auth method %q is not supported: use token, approle or kubernetes", component, a.Method)
	}
	return nil
}

func (a Auth) method() string {
	if a.Method == "" {
		return AuthToken
	}
	return strings.ToLower(a.Method)
}

func (a Auth) mount() string {
	if a.Mount != "" {
		return strings.Trim(a.Mount, "/")
	}
	return a.method()
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

// retryPolicy retries connection errors and transient server errors, but
// not a sealed Vault (503) or a refusal: those will not pass by retrying
// within a request.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
		return false, nil
	}
	return api.DefaultRetryPolicy(ctx, resp, err)
}

// login obtains a token with the configured method and returns its auth
// data (nil for a token that does not expire).
func (c *Client) login(ctx context.Context) (*api.SecretAuth, error) {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	a := c.cfg.Auth
	switch a.method() {
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
	path := "auth/" + c.cfg.Auth.mount() + "/login"
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
		return nil, c.explain("log in to Vault with "+c.cfg.Auth.method(), path, "login", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%s: Vault login at %s returned no token", c.component, path)
	}
	c.api.SetToken(s.Auth.ClientToken)
	return s.Auth, nil
}

// canRelogin reports whether a new token can be obtained without help.
func (c *Client) canRelogin() bool {
	return c.cfg.Auth.method() != AuthToken || c.cfg.Auth.TokenFile != ""
}

// keepAlive renews a renewable token, and logs in again when it can no
// longer be renewed, until ctx ends.
func (c *Client) keepAlive(ctx context.Context, auth *api.SecretAuth) {
	defer close(c.done)
	for {
		if !c.waitForExpiry(ctx, auth) {
			return
		}
		if !c.canRelogin() {
			c.log.Warn("vault token can no longer be renewed and meshroot cannot log in again: configure a new token", "component", c.component)
			<-ctx.Done()
			return
		}
		for backoff := time.Second; ; backoff = min(2*backoff, time.Minute) {
			next, err := c.login(ctx)
			if err == nil {
				auth = next
				break
			}
			c.log.Warn("vault re-login failed", "component", c.component, "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
		}
	}
}

// waitForExpiry renews auth while it can and returns true when a new token
// is needed, or false when ctx ends first. A token without a TTL never
// needs replacing.
func (c *Client) waitForExpiry(ctx context.Context, auth *api.SecretAuth) bool {
	switch {
	case auth == nil:
		<-ctx.Done()
		return false
	case !auth.Renewable:
		return sleep(ctx, time.Duration(auth.LeaseDuration)*time.Second*2/3)
	}
	w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: &api.Secret{Auth: auth}})
	if err != nil {
		c.log.Warn("vault token renewal cannot start", "component", c.component, "err", err)
		return sleep(ctx, time.Duration(auth.LeaseDuration)*time.Second*2/3)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-w.DoneCh():
			if err != nil {
				c.log.Warn("vault token renewal stopped", "component", c.component, "err", err)
			}
			return true
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				c.log.Debug("vault token renewed", "component", c.component, "ttl_seconds", r.Secret.Auth.LeaseDuration)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
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
