//go:build pprof

package pprofdebug

import (
	"net"
	"net/http"
	_ "net/http/pprof" // the profiling handlers, on their own listener
	"os"
	"runtime"
	"strconv"
)

func init() {
	// MESHROOT_MEMPROFILE_RATE sets runtime.MemProfileRate (1: every
	// allocation), for heap profiles of a small heap.
	if r, err := strconv.Atoi(os.Getenv("MESHROOT_MEMPROFILE_RATE")); err == nil && r > 0 {
		runtime.MemProfileRate = r
	}
	addr := os.Getenv("MESHROOT_PPROF_LISTEN")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		panic("MESHROOT_PPROF_LISTEN must be a loopback host:port")
	}
	startFlightRecorder()
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
