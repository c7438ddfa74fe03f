// Package vaultconf says where HashiCorp Vault is and how meshroot logs in
// to it. It holds only the settings, with no dependency beyond the standard
// library, so that the key catalog (package keys, which the in-cluster
// agent imports) can carry them without pulling in the Vault client;
// package vaultclient connects with them.
package vaultconf

import (
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"
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

// Validate checks the settings without contacting Vault. component names
// the caller in errors ("vault-transit key manager").
func (cfg Config) Validate(component string) error {
	if cfg.Address == "" {
		return fmt.Errorf("%s: no Vault address given: set it, for example https://vault.example.com:8200", component)
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: Vault address %q is not an http(s) URL", component, cfg.Address)
	}
	a := cfg.Auth
	switch a.MethodName() {
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

// MethodName is the auth method in lower case, "token" when unset.
func (a Auth) MethodName() string {
	if a.Method == "" {
		return AuthToken
	}
	return strings.ToLower(a.Method)
}

// MountPath is the auth method's mount path, by default its name.
func (a Auth) MountPath() string {
	if a.Mount != "" {
		return strings.Trim(a.Mount, "/")
	}
	return a.MethodName()
}

var mountPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)

// SecretsMount cleans a secrets engine's mount path (surrounding slashes
// dropped, def when empty) and checks its characters, for the Transit key
// manager and the PKI upstream alike.
func SecretsMount(component, mount, def string) (string, error) {
	m := strings.Trim(mount, "/")
	if m == "" {
		m = def
	}
	if !mountPattern.MatchString(m) {
		return "", fmt.Errorf("%s: mount path %q is invalid: use letters, digits, '.', '_' and '-' in /-separated segments", component, mount)
	}
	return m, nil
}

// ValidMount reports whether mount is a well-formed secrets engine mount
// path (no surrounding slashes).
func ValidMount(mount string) bool { return mountPattern.MatchString(mount) }
