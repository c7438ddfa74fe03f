//go:build nostepca

package main

import (
	"context"
	"fmt"

	"github.com/meshroot/meshroot/ca"
)

// openStepCA refuses: this binary was built without the step-ca upstream.
func openStepCA(context.Context, stepCAConfig, string) (ca.Upstream, error) {
	return nil, usageError{fmt.Errorf("this meshroot was built with -tags nostepca, without the step-ca upstream: use a build without that tag")}
}
