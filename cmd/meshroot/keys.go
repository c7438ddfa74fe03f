package main

import (
	"context"
	"crypto"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/keys/kms"
	"github.com/meshroot/meshroot/keys/pkcs11"
	"github.com/meshroot/meshroot/keys/vaulttransit"
	"github.com/meshroot/meshroot/upstream/vaultpki"
)

// keysConfig says where root keys live. Existing keys are found by their
// reference's prefix; new ones go to Create.
type keysConfig struct {
	// Create is where new root keys go: "disk" (the default: encrypted
	// files in the data dir), "pkcs11:module-path=...;token=...?pin-source=...",
	// "vault-transit://MOUNT", or a go.step.sm kms URI ("softkms:dir=...",
	// "awskms:region=...", "cloudkms:key-ring=...", "azurekms:vault=...").
	Create string `yaml:"create"`
	// Vault is the connection for vault-transit keys and the vault-pki upstream.
	Vault vaultConfig `yaml:"vault"`
	// StepCA is the provisioner key for step-ca upstreams.
	StepCA stepCAConfig `yaml:"stepCA"`
}

// stepCAConfig is the JWK provisioner key meshroot signs step-ca's
// one-time tokens with (the upstream reference names the provisioner).
type stepCAConfig struct {
	KeyFile      string `yaml:"keyFile"`
	PasswordFile string `yaml:"passwordFile"`
}

// vaultConfig is how meshroot reaches and logs in to Vault.
type vaultConfig struct {
	Address      string `yaml:"address"`
	Namespace    string `yaml:"namespace"`
	CAFile       string `yaml:"caFile"`
	ServerName   string `yaml:"serverName"`
	AuthMethod   string `yaml:"authMethod"` // token (default), approle, kubernetes
	AuthMount    string `yaml:"authMount"`
	TokenFile    string `yaml:"tokenFile"`
	RoleID       string `yaml:"roleID"`
	SecretIDFile string `yaml:"secretIDFile"`
	Role         string `yaml:"role"`
	JWTFile      string `yaml:"jwtFile"`
}

func (v vaultConfig) client() (vaultclient.TLS, vaultclient.Auth) {
	method := v.AuthMethod
	if method == "" {
		method = "token"
	}
	return vaultclient.TLS{CAFile: v.CAFile, ServerName: v.ServerName}, vaultclient.Auth{
		Method: method, Mount: v.AuthMount, TokenFile: v.TokenFile, RoleID: v.RoleID,
		SecretIDFile: v.SecretIDFile, Role: v.Role, JWTFile: v.JWTFile,
	}
}

// kmsSchemes are the go.step.sm kms URI schemes passed to package kms.
var kmsSchemes = []string{"softkms:", "awskms:", "cloudkms:", "azurekms:"}

// keyManager builds the router over every backend meshroot knows. disk is
// the data dir's key folder; backends open on first use, so one that is
// down or unconfigured fails only the keys that live in it.
func keyManager(ctx context.Context, cfg keysConfig, dataDir string, pass []byte, plaintext bool) (*keys.Router, error) {
	diskFactory := func(context.Context, string) (keys.KeyManager, error) {
		km, err := disk.New(disk.Options{Dir: filepath.Join(dataDir, "keys"), Passphrase: pass, InsecurePlaintext: plaintext})
		if err != nil {
			return nil, usageError{err}
		}
		return km, nil
	}
	transit := func(ctx context.Context, ref string) (keys.KeyManager, error) {
		if cfg.Vault.Address == "" {
			return nil, usageError{fmt.Errorf("key %s is in Vault Transit: configure Vault (--vault-addr and --vault-token-file, or keys.vault in the config)", ref)}
		}
		mount := "transit"
		if rest, ok := strings.CutPrefix(ref, "vault-transit://"); ok && rest != "" {
			mount, _, _ = strings.Cut(rest, "/")
		}
		tlsCfg, auth := cfg.Vault.client()
		return vaulttransit.New(ctx, vaulttransit.Options{Address: cfg.Vault.Address, Namespace: cfg.Vault.Namespace, TLS: tlsCfg, Auth: auth, Mount: mount})
	}
	p11 := func(ctx context.Context, ref string) (keys.KeyManager, error) {
		uri := p11KeyAttr.ReplaceAllString(ref, "$1")
		if strings.HasPrefix(cfg.Create, "pkcs11:") {
			uri = cfg.Create
		}
		return pkcs11.New(ctx, pkcs11.Options{URI: uri})
	}
	kmsFactory := func(ctx context.Context, ref string) (keys.KeyManager, error) {
		uri := ref
		if p, ok := strings.CutPrefix(ref, "softkms:path="); ok {
			if up, err := url.PathUnescape(p); err == nil {
				p = up
			}
			uri = "softkms:dir=" + filepath.Dir(p)
		}
		for _, s := range kmsSchemes {
			if strings.HasPrefix(ref, s) && strings.HasPrefix(cfg.Create, s) {
				uri = cfg.Create
			}
		}
		return kms.New(ctx, kms.Options{URI: uri, Passphrase: pass, InsecurePlaintext: plaintext})
	}
	factories := map[string]keys.Factory{disk.RefPrefix: diskFactory, "vault-transit://": transit, "pkcs11:": p11}
	for _, s := range kmsSchemes {
		factories[s] = kmsFactory
	}
	var open keys.Factory
	switch c := cfg.Create; {
	case c == "" || c == "disk":
		open = diskFactory
	case strings.HasPrefix(c, "vault-transit://"):
		open = transit
	case strings.HasPrefix(c, "pkcs11:"):
		open = p11
	default:
		known := false
		for _, s := range kmsSchemes {
			known = known || strings.HasPrefix(c, s)
		}
		if !known {
			return nil, usageError{fmt.Errorf("--key %q: use disk, pkcs11:..., vault-transit://MOUNT, softkms:..., awskms:..., cloudkms:... or azurekms:...", c)}
		}
		open = kmsFactory
	}
	return keys.NewRouter(&lazyKM{create: cfg.Create, open: open}, factories), nil
}

var p11KeyAttr = regexp.MustCompile(`;(?:id|object)=[^;?]*`)

// lazyKM opens the key manager for new keys on first use.
type lazyKM struct {
	create string
	open   keys.Factory
	mu     sync.Mutex
	km     keys.KeyManager
}

func (l *lazyKM) get(ctx context.Context) (keys.KeyManager, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.km != nil {
		return l.km, nil
	}
	km, err := l.open(ctx, l.create)
	if err != nil {
		return nil, fmt.Errorf("key manager for new keys (%s): %w", l.create, err)
	}
	l.km = km
	return km, nil
}
func (l *lazyKM) CreateKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	km, err := l.get(ctx)
	if err != nil {
		return keys.Key{}, err
	}
	return km.CreateKey(ctx, name, kt)
}
func (l *lazyKM) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	km, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return km.Signer(ctx, ref)
}
func (l *lazyKM) ListKeys(ctx context.Context) ([]keys.Key, error) {
	km, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return km.ListKeys(ctx)
}
func (l *lazyKM) ImportKey(ctx context.Context, name string, signer crypto.Signer) (keys.Key, error) {
	km, err := l.get(ctx)
	if err != nil {
		return keys.Key{}, err
	}
	imp, ok := km.(keys.Importer)
	if !ok {
		return keys.Key{}, fmt.Errorf("the key manager for new keys (%s) cannot import keys", l.create)
	}
	return imp.ImportKey(ctx, name, signer)
}
func (l *lazyKM) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.km.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// upstreamOpener opens vault-pki://MOUNT[?issuer=NAME] with the Vault
// connection in cfg, and step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX
// with the provisioner key in cfg.
func upstreamOpener(cfg keysConfig) ca.UpstreamOpener {
	var mu sync.Mutex
	open := map[string]ca.Upstream{}
	return func(ctx context.Context, ref string) (ca.Upstream, error) {
		mu.Lock()
		defer mu.Unlock()
		if u, ok := open[ref]; ok {
			return u, nil
		}
		if strings.HasPrefix(ref, ca.StepCAScheme) {
			up, err := openStepCA(ctx, cfg.StepCA, ref)
			if err != nil {
				return nil, err
			}
			open[ref] = up
			return up, nil
		}
		if cfg.Vault.Address == "" {
			return nil, usageError{fmt.Errorf("the signing authority %s is in Vault PKI: configure Vault (--vault-addr and --vault-token-file, or keys.vault in the config)", ref)}
		}
		u, err := url.Parse(ref)
		if err != nil || u.Scheme != "vault-pki" || u.Host == "" {
			return nil, usageError{fmt.Errorf("upstream %q: want vault-pki://MOUNT[?issuer=NAME]", ref)}
		}
		tlsCfg, auth := cfg.Vault.client()
		up, err := vaultpki.New(ctx, vaultpki.Options{
			Address: cfg.Vault.Address, Namespace: cfg.Vault.Namespace, TLS: tlsCfg, Auth: auth,
			Mount: u.Host + u.Path, Issuer: u.Query().Get("issuer"),
		})
		if err != nil {
			return nil, err
		}
		open[ref] = up
		return up, nil
	}
}
