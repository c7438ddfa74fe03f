//go:build tools

// Package tools pins istiod (pilot-discovery) for meshroot's tests. It is a
// module of its own, beside test/tools/istiosigner and requiring the same
// istio.io/istio version, so both resolve to the same module versions and
// share the module and build caches. test/tools/build.sh istiod builds it.
package tools

import (
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
