// Package pprofdebug serves net/http/pprof on the loopback address in
// MESHROOT_PPROF_LISTEN, in binaries built with -tags pprof (for
// profiling, e.g. by test/bench/fleet -pprof and -agent-pprof). With
// MESHROOT_FLIGHT_RECORDER (a duration) it also keeps a runtime/trace
// flight recorder of at least that long and serves its window at
// /debug/flight (test/bench/fleet -trace-slow). Without the tag it is
// empty: release builds contain no profiling handlers.
// meshroot and meshroot-agent import it for its side effect.
package pprofdebug
