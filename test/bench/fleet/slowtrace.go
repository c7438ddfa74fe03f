package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/trace"
	"strings"
	"time"
)

// traceCategory is the runtime/trace log category of each change's marks
// ("change start: <kind>", "change applied by every agent: <kind>"), which
// test/bench/tracestat looks for (its markCategory and startPrefix).
const traceCategory = "bench-fleet"

// slowTraceWindow is how much execution the flight recorders keep: a
// change's wait for rest (quietWindow and more), its admin call and its
// delivery to the slowest agent all fit inside it.
const slowTraceWindow = 15 * time.Second

// slowTrace keeps a runtime/trace flight recorder of this process (the
// in-process agents) and asks the server's (a meshroot built with -tags
// pprof, started with MESHROOT_FLIGHT_RECORDER) for its window, saving
// both when a change's slowest agent took min or more: a slow change can
// then be read after the fact (go tool trace, -pprof=sched) without
// tracing every change. A nil slowTrace does nothing.
type slowTrace struct {
	min  time.Duration
	dir  string
	addr string // the server's pprof listener; "": this process only
	fr   *trace.FlightRecorder
	// saved counts the changes whose traces were saved.
	saved int
}

// startSlowTrace starts this process's flight recorder; nil when min is 0.
func startSlowTrace(min time.Duration, dir, addr string) (*slowTrace, error) {
	if min <= 0 {
		return nil, nil
	}
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: slowTraceWindow, MaxBytes: 1 << 30})
	if err := fr.Start(); err != nil {
		return nil, fmt.Errorf("flight recorder: %w", err)
	}
	return &slowTrace{min: min, dir: dir, addr: addr, fr: fr}, nil
}

// changeDone saves the traces of change n of kind (bench-NAME and
// server-NAME, NAME from changeTrace) when its slowest agent took at
// least s.min.
func (s *slowTrace) changeDone(kind string, n int, burst bool, slowest time.Duration) {
	if s == nil || slowest < s.min {
		return
	}
	name := changeTrace(kind, n, burst)
	if err := s.save(name); err != nil {
		fmt.Fprintf(os.Stderr, "trace of a slow change: %v\n", err)
		return
	}
	s.saved++
	fmt.Fprintf(os.Stderr, "slow change (slowest agent %s): traces saved as %s\n", ms(slowest), filepath.Join(s.dir, "{bench,server}-"+name))
}

func (s *slowTrace) save(name string) error {
	f, err := os.Create(filepath.Join(s.dir, "bench-"+name))
	if err != nil {
		return err
	}
	_, err = s.fr.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || s.addr == "" {
		return err
	}
	resp, err := http.Get("http://" + s.addr + "/debug/flight")
	if err != nil {
		return fmt.Errorf("the server's trace: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("the server's trace: %s: %s (was it built with -tags pprof and started with MESHROOT_FLIGHT_RECORDER?)", resp.Status, strings.TrimSpace(string(b)))
	}
	out, err := os.Create(filepath.Join(s.dir, "server-"+name))
	if err != nil {
		return err
	}
	_, err = io.Copy(out, resp.Body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// stop ends this process's flight recorder.
func (s *slowTrace) stop() {
	if s != nil {
		s.fr.Stop()
	}
}

// changeTrace names the traces of the fan-out's change n of kind:
// trace-<kind's last word>-<n>.trace, with b2b- before the kind for
// changes made back to back (trace-b2b-prepare-03.trace).
func changeTrace(kind string, n int, burst bool) string {
	k := kindWord(kind)
	if burst {
		k = "b2b-" + k
	}
	return fmt.Sprintf("trace-%s-%02d.trace", k, n)
}
