package pluginserve

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/upstream/stepca"
)

// maxPasswordFile bounds the step-ca provisioner password file.
const maxPasswordFile = 4096

// openStepCA opens
// step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME]
// with the provisioner keys and password read from the files cfg names.
// The server provisioner signs meshroot's own server CA; it defaults to
// the provisioner's name with stepca.DefaultServerSuffix.
func openStepCA(ctx context.Context, cfg *pluginv1.UpstreamConfig) (*stepca.Upstream, error) {
	const want = "want step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME] (HEX: the SHA-256 of step-ca's root)"
	ref := cfg.GetRef()
	u, err := url.Parse(ref)
	if err != nil || u.Scheme != "step-ca" || u.Host == "" || u.Path != "" || u.User != nil {
		return nil, invalidf("upstream %q: %s", ref, want)
	}
	q := u.Query()
	for k := range q {
		if k != "provisioner" && k != "fingerprint" && k != "serverProvisioner" {
			return nil, invalidf("upstream %q: unknown parameter %q: %s", ref, k, want)
		}
	}
	if cfg.GetKeyFile() == "" && cfg.GetPasswordFile() == "" {
		return nil, invalidf("the signing authority %s is step-ca: give its provisioner key (--step-ca-key-file, or keys.stepCA in the config)", ref)
	}
	var password string
	if f := cfg.GetPasswordFile(); f != "" {
		b, err := fsutil.ReadBounded(f, maxPasswordFile)
		if err != nil {
			return nil, invalidf("step-ca provisioner password: %v", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	return stepca.New(ctx, stepca.Options{
		URL: "https://" + u.Host, Fingerprint: q.Get("fingerprint"), Provisioner: q.Get("provisioner"),
		ServerProvisioner: q.Get("serverProvisioner"), ServerKeyFile: cfg.GetServerKeyFile(),
		KeyFile: cfg.GetKeyFile(), Password: password,
	})
}

func invalidf(format string, args ...any) error {
	return invalidError{fmt.Errorf(format, args...)}
}
