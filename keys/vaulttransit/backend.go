package vaulttransit

import (
	"context"
	"fmt"
	"strings"

	"github.com/meshroot/meshroot/keys"
)

func init() { keys.Register(backend{}) }

// backend registers the vault-transit scheme with the key catalog.
type backend struct{}

func (backend) Schemes() []string { return []string{Scheme} }

// Open opens vault-transit://MOUNT (vault-transit:// alone is the default
// mount) with the Vault connection of the configuration.
func (backend) Open(ctx context.Context, uri string, cfg keys.Config) (keys.KeyManager, error) {
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok || strings.ContainsAny(rest, "?#") {
		return nil, fmt.Errorf("%s: URI %q: want %s://MOUNT", component, uri, Scheme)
	}
	if cfg.Vault.Address == "" {
		return nil, keys.NotConfigured(fmt.Errorf("%s: keys in %s are in Vault Transit, but no Vault is configured: configure Vault (--vault-addr and --vault-token-file, or keys.vault in the config)", component, uri))
	}
	vc := cfg.Vault
	if vc.Logger == nil {
		vc.Logger = cfg.Logger
	}
	return New(ctx, Options{Vault: vc, Mount: rest})
}

// ManagerURI: a reference names its mount; the Vault connection and login
// come from the configuration.
func (backend) ManagerURI(ref string, _ keys.Config) (string, error) {
	mount, _, _, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	return Scheme + "://" + mount, nil
}
