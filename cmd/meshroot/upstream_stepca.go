//go:build !nostepca

package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/upstream/stepca"
)

// The step-ca upstream links smallstep/certificates (its CAS client pulls
// in step-ca's server packages): about +12 MB of binary and +10 MB of idle
// RSS, measured in docs/performance.md. Build with -tags nostepca to leave
// it out.

// openStepCA opens
// step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME].
// The server provisioner signs meshroot's own server CA; it defaults to
// the provisioner's name with stepca.DefaultServerSuffix.
func openStepCA(ctx context.Context, cfg stepCAConfig, ref string) (ca.Upstream, error) {
	const want = "want step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME] (HEX: the SHA-256 of step-ca's root)"
	u, err := url.Parse(ref)
	if err != nil || u.Scheme != "step-ca" || u.Host == "" || u.Path != "" || u.User != nil {
		return nil, usageError{fmt.Errorf("upstream %q: %s", ref, want)}
	}
	q := u.Query()
	for k := range q {
		if k != "provisioner" && k != "fingerprint" && k != "serverProvisioner" {
			return nil, usageError{fmt.Errorf("upstream %q: unknown parameter %q: %s", ref, k, want)}
		}
	}
	if cfg.KeyFile == "" && cfg.PasswordFile == "" {
		return nil, usageError{fmt.Errorf("the signing authority %s is step-ca: give its provisioner key (--step-ca-key-file, or keys.stepCA in the config)", ref)}
	}
	var password string
	if cfg.PasswordFile != "" {
		b, err := readBounded(cfg.PasswordFile, 4096)
		if err != nil {
			return nil, usageError{fmt.Errorf("step-ca provisioner password: %w", err)}
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	up, err := stepca.New(ctx, stepca.Options{
		URL: "https://" + u.Host, Fingerprint: q.Get("fingerprint"), Provisioner: q.Get("provisioner"),
		ServerProvisioner: q.Get("serverProvisioner"), ServerKeyFile: cfg.ServerKeyFile,
		KeyFile: cfg.KeyFile, Password: password,
	})
	if err != nil {
		return nil, err
	}
	return up, nil
}
