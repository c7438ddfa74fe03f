package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/pluginhost"
)

// openStepCA checks
// step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME]
// and the provisioner key settings, and returns the upstream, which runs
// in meshroot-plugin: the step-ca client links step-ca's server packages,
// kept out of this binary. The plugin reads the key and password files.
// The server provisioner signs meshroot's own server CA; it defaults to
// the provisioner's name with the suffix "-server".
func openStepCA(_ context.Context, cfg stepCAConfig, ref string) (ca.Upstream, error) {
	const want = "want step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME] (HEX: the SHA-256 of step-ca's root)"
	u, err := url.Parse(ref)
	if err != nil || u.Scheme != "step-ca" || u.Host == "" || u.Path != "" || u.User != nil {
		return nil, usageError{fmt.Errorf("upstream %q: %s", ref, want)}
	}
	for k := range u.Query() {
		if k != "provisioner" && k != "fingerprint" && k != "serverProvisioner" {
			return nil, usageError{fmt.Errorf("upstream %q: unknown parameter %q: %s", ref, k, want)}
		}
	}
	if cfg.KeyFile == "" && cfg.PasswordFile == "" {
		return nil, usageError{fmt.Errorf("the signing authority %s is step-ca: give its provisioner key (--step-ca-key-file, or keys.stepCA in the config)", ref)}
	}
	return pluginhost.Upstream(plugins, pluginhost.UpstreamConfig{
		Ref: ref, KeyFile: cfg.KeyFile, ServerKeyFile: cfg.ServerKeyFile, PasswordFile: cfg.PasswordFile,
	}), nil
}
