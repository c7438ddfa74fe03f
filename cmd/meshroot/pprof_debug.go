//go:build pprof

package main

import (
	"net"
	"net/http"
	_ "net/http/pprof" // the profiling handlers, on their own listener
	"os"
)

// A build with -tags pprof serves net/http/pprof on the loopback address
// in MESHROOT_PPROF_LISTEN (for profiling, e.g. by test/bench/fleet
// -profile). Release builds do not contain it.
func init() {
	addr := os.Getenv("MESHROOT_PPROF_LISTEN")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		panic("MESHROOT_PPROF_LISTEN must be a loopback host:port")
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
