// Package pprofdebug serves net/http/pprof on the loopback address in
// MESHROOT_PPROF_LISTEN, in binaries built with -tags pprof (for
// profiling, e.g. by test/bench/fleet -pprof and -agent-pprof). Without
// the tag it is empty: release builds contain no profiling handlers.
// meshroot and meshroot-agent import it for its side effect.
package pprofdebug
