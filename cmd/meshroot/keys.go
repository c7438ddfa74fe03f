package main

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/upstream/vaultpki"

	// The key backends register their URI schemes with the key catalog.
	// Only the server and the CLI import them; the agent imports none.
	// The cloud KMS key managers run in meshroot-plugin (plugin.go).
	_ "github.com/meshroot/meshroot/keys/disk"
	_ "github.com/meshroot/meshroot/keys/pkcs11"
	_ "github.com/meshroot/meshroot/keys/vaulttransit"
)

// keysConfig says where root keys live. Existing keys are found by their
// reference's scheme, through the key catalog; new ones go to Create.
type keysConfig struct {
	// Create is the URI of the key manager for new root keys: "disk" (the
	// default: encrypted files in the data dir) or a URI of any registered
	// backend (docs/keys.md lists them).
	Create string `yaml:"create"`
	// Dir is the disk key manager's folder (default DATA_DIR/keys). In
	// HA mode it is a Secret mounted on every replica (docs/ha.md).
	Dir string `yaml:"dir"`
	// groupReadable accepts key files their group may read (HA mode: a
	// Secret mounted with the pod's fsGroup); not configurable.
	groupReadable bool
	// Vault is the connection for vault-transit keys and the vault-pki upstream.
	Vault vaultConfig `yaml:"vault"`
	// StepCA is the provisioner key for step-ca upstreams.
	StepCA stepCAConfig `yaml:"stepCA"`
	// Plugin is the meshroot-plugin binary, which runs the cloud KMS key
	// managers and the step-ca upstream; empty looks next to meshroot,
	// then in $PATH.
	Plugin string `yaml:"plugin"`
}

// stepCAConfig is the JWK provisioner keys meshroot signs step-ca's
// one-time tokens with (the upstream reference names the provisioners):
// the cluster intermediates' and the server CA's.
type stepCAConfig struct {
	KeyFile       string `yaml:"keyFile"`
	ServerKeyFile string `yaml:"serverKeyFile"`
	PasswordFile  string `yaml:"passwordFile"`
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

func (v vaultConfig) client() vaultclient.Config {
	return vaultclient.Config{
		Address: v.Address, Namespace: v.Namespace,
		TLS: vaultclient.TLS{CAFile: v.CAFile, ServerName: v.ServerName},
		Auth: vaultclient.Auth{
			Method: v.AuthMethod, Mount: v.AuthMount, TokenFile: v.TokenFile, RoleID: v.RoleID,
			SecretIDFile: v.SecretIDFile, Role: v.Role, JWTFile: v.JWTFile,
		},
	}
}

// keyManager builds the router over every key backend registered in the
// catalog (the blank imports above). disk is the data dir's key folder;
// backends open on first use, so one that is down or unconfigured fails
// only the keys that live in it.
func keyManager(_ context.Context, cfg keysConfig, dataDir string, pass []byte, plaintext bool) (*keys.Router, error) {
	usePlugin(cfg)
	r, err := keys.NewRouter(keys.Config{
		Create: cfg.Create, Dir: diskKeyDir(cfg, dataDir), GroupReadable: cfg.groupReadable,
		Passphrase: pass, InsecurePlaintext: plaintext, Vault: cfg.Vault.client(),
	})
	if err != nil {
		return nil, usageError{fmt.Errorf("--key: %w", err)}
	}
	return r, nil
}

// diskKeyDir is the disk key manager's folder: keys.dir, else the data
// dir's keys/.
func diskKeyDir(cfg keysConfig, dataDir string) string {
	if cfg.Dir != "" {
		return cfg.Dir
	}
	return filepath.Join(dataDir, "keys")
}

// upstreamOpener opens vault-pki://MOUNT[?issuer=NAME] with the Vault
// connection in cfg, and step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX
// with the provisioner key in cfg (in meshroot-plugin).
func upstreamOpener(cfg keysConfig) ca.UpstreamOpener {
	usePlugin(cfg)
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
		up, err := vaultpki.New(ctx, vaultpki.Options{Vault: cfg.Vault.client(), Mount: u.Host + u.Path, Issuer: u.Query().Get("issuer")})
		if err != nil {
			return nil, err
		}
		open[ref] = up
		return up, nil
	}
}
