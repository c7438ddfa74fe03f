// Command fleet measures meshroot at fleet scale in one run: one server
// (`meshroot serve`, its own process), N in-process agents (the agent
// package's agent.Agent.Run, one gRPC/TLS connection each over loopback,
// Secrets in client-go fake clientsets), and the lean agent binary as a
// process in folder mode. It prints:
//
//   - trust bundle fan-out to 100 and to 1,000 watching agents: from the
//     admin call that commits a bundle change to each agent having written
//     the new bundle into its cacerts Secret (p50, p99, max), each change
//     from a fleet at rest; then at 1,000 the same changes back to back;
//   - a full root rotation of 100 clusters through the admin API, phase
//     by phase;
//   - the server's RSS idle, with 1,000 watchers and after the rotation,
//     and the lean agent's idle RSS;
//
// each next to its goal.
//
//	make build && go run ./test/bench/fleet
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// agentWarnings collects the in-process agents' warnings.
var agentWarnings = &warnLog{}

type options struct {
	meshroot, agentBin string
	small, large       int
	rounds             int
	settle             time.Duration
	keep               bool
	pprof, profDir     string
	profWindow         time.Duration
	traceSlow          time.Duration
	agentPprof         string
	noStreams          bool
	burst              bool
	kubeCopy           bool
	streamsOnly        bool
	memLimit           int64 // the agents' soft memory limit (bytes; 0: none known)
	agentProcs         int   // processes the agents run in (1: this one)
}

func main() {
	var o options
	flag.StringVar(&o.meshroot, "meshroot", "bin/meshroot", "the meshroot binary (make build)")
	flag.StringVar(&o.agentBin, "agent", "bin/meshroot-agent", "the lean agent binary (make build)")
	flag.IntVar(&o.small, "small", 100, "agents of the first fan-out and of the rotation")
	flag.IntVar(&o.large, "large", 1000, "agents of the second fan-out")
	flag.IntVar(&o.rounds, "rounds", 3, "bundle changes per fan-out are 2x this (root prepare, then rollback)")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "idle time before each RSS reading")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (server log, data dir)")
	flag.StringVar(&o.pprof, "pprof", "", "with a meshroot built with -tags pprof: its pprof address (127.0.0.1:PORT); saves server heap and CPU profiles and a CPU profile of the agents into -profile-dir")
	flag.StringVar(&o.profDir, "profile-dir", ".", "where -pprof puts the profiles")
	flag.DurationVar(&o.profWindow, "profile-window", 4*time.Second, "with -pprof: each change of the fan-out to -large is CPU-profiled (server-cpu-<kind>-<n>.pprof, bench-cpu-<kind>-<n>.pprof) for this long (whole seconds) from its admin call's start")
	flag.DurationVar(&o.traceSlow, "trace-slow", 0, "during the fan-outs to -large, keep runtime/trace flight recorders of the agents (this process) and, with -pprof, of the server; save both into -profile-dir for each change whose slowest agent took this long or more (bench-trace-<kind>-<n>.trace, server-...; b2b- for changes back to back); 0: off")
	flag.StringVar(&o.agentPprof, "agent-pprof", "", "with a meshroot-agent built with -tags pprof: the lean agent's pprof address (127.0.0.1:PORT); after its RSS reading, saves its memory statistics (agent-memstats.txt) and heap profile (agent-heap.pprof) into -profile-dir")
	flag.BoolVar(&o.streamsOnly, "streams-only", false, "only the server's fan-out alone: -large clusters join in waves of -small agents, which stop once joined, then -large watch streams")
	flag.BoolVar(&o.kubeCopy, "kube-copy", false, "the in-memory clusters store a copy of each Secret written (~1 MB at 1,000 clusters), as before 2026-12-02: an API server's work, counted then as the agents'")
	flag.BoolVar(&o.burst, "burst", true, "after the fan-out to -large, time as many changes again back to back: each as soon as every agent applied the last (the fan-out's method before 2026-12-03)")
	flag.BoolVar(&o.noStreams, "no-streams", false, "skip the stream fan-out (the server's part alone, after the agents stop)")
	flag.IntVar(&o.agentProcs, "agent-procs", 1, "run the agents in this many child processes (agent shards), each holding every Nth agent; 1: in this process")
	flag.BoolVar(&shardChild, "agent-shard", false, "internal: run as an agent shard (commands on stdin, events on stdout)")
	flag.IntVar(&streamsChild.n, "streams-child", 0, "internal: run as the stream fan-out's child, holding this many watch streams")
	flag.StringVar(&streamsChild.addr, "streams-addr", "", "internal: the stream child's server address")
	flag.StringVar(&streamsChild.ca, "streams-ca", "", "internal: the stream child's server CA file")
	flag.Parse()
	if shardChild {
		if err := runAgentShard(); err != nil {
			log.Fatal(err)
		}
		return
	}
	if streamsChild.n > 0 {
		if err := runStreamsChild(); err != nil {
			log.Fatal(err)
		}
		return
	}
	o.memLimit = memLimit()
	watchMemory()
	if err := run(o); err != nil {
		if n, first := agentWarnings.snapshot(); n > 0 {
			log.Printf("agent warnings and errors logged: %d, first: %s", n, strings.Join(first, "\n  "))
		}
		log.Fatal(err)
	}
}

func run(o options) (err error) {
	for _, b := range []string{o.meshroot, o.agentBin} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s: %v (run make build first)", b, err)
		}
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "mr-fleet-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("temporary folder kept: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	load0 := loadavg()
	start := time.Now()
	var env []string
	prof := &profiler{addr: o.pprof, dir: o.profDir, window: o.profWindow.Round(time.Second)}
	if o.pprof != "" {
		env = append(env, "MESHROOT_PPROF_LISTEN="+o.pprof)
		if o.traceSlow > 0 {
			env = append(env, "MESHROOT_FLIGHT_RECORDER="+slowTraceWindow.String())
		}
	}
	// The server and the lean agent run from their own copies, out of the
	// page cache, so that their idle RSS is comparable with make
	// bench-idle's and with the goals.
	if o.meshroot, err = coldCopy(o.meshroot, dir, "meshroot"); err != nil {
		return err
	}
	if o.agentBin, err = coldCopy(o.agentBin, dir, "meshroot-agent"); err != nil {
		return err
	}
	srv, err := startServe(o.meshroot, dir, env)
	if err != nil {
		return err
	}
	defer srv.stop()
	ctx = ca.WithActor(ctx, "bench-fleet")
	if _, err := srv.admin.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "fleet.example"}); err != nil {
		return fmt.Errorf("root init: %w", err)
	}
	tb, err := srv.admin.TrustBundle(ctx)
	if err != nil {
		return err
	}
	roots, err := rootsPEM(tb)
	if err != nil {
		return err
	}
	r := &report{o: o}
	if r.serverIdle, err = settledMem(ctx, srv.pid(), o.settle); err != nil {
		return err
	}

	warn := agentWarnings
	f := newFleet(srv.issuerAddr, srv.admin, roots, warn)
	f.kubeCopy = o.kubeCopy
	f.procs, f.memLimit = max(o.agentProcs, 1), o.memLimit
	prof.shards = f
	defer f.stop()
	if o.streamsOnly {
		return streamsOnly(ctx, o, srv, f, dir, os.Stdout)
	}
	// Registered last, so that it runs while the server and the agents are
	// still up.
	defer func() {
		if err != nil {
			prof.goroutines()
		}
	}()
	t := time.Now()
	if err := f.grow(ctx, o.small); err != nil {
		return err
	}
	r.setupSmall = time.Since(t)
	progress("%d agents bootstrapped in %s", o.small, r.setupSmall.Round(time.Millisecond))
	if r.fanSmall, err = fanout(ctx, f, srv, o.rounds, false, nil, nil); err != nil {
		return fmt.Errorf("fan-out to %d: %w", o.small, err)
	}
	progress("fan-out to %d: p50 %s p99 %s max %s", o.small, ms(pct(r.fanSmall.lat, .5)), ms(pct(r.fanSmall.lat, .99)), ms(maxDur(r.fanSmall.lat)))
	if r.rotation, err = rotate(ctx, f, srv); err != nil {
		return fmt.Errorf("rotation of %d clusters: %w", o.small, err)
	}
	progress("rotation of %d clusters: %s", o.small, ms(r.rotation.total()))
	if r.serverAfterRotation, err = settledMem(ctx, srv.pid(), o.settle); err != nil {
		return err
	}
	t = time.Now()
	for n := o.small; n < o.large; {
		n = min(n+o.small, o.large) // in waves, to show progress
		if err := f.grow(ctx, n); err != nil {
			return err
		}
		progress("  %d agents running", n)
	}
	r.setupLarge = time.Since(t)
	progress("%d agents bootstrapped in %s", o.large, r.setupLarge.Round(time.Millisecond))
	// The last joins' work (their CRLs reaching every agent's set, each a
	// change of the fleet's CRL set, and their reports) goes on for a
	// while after the last agent wrote its cacerts: the fan-out measures
	// a fleet at rest, as a fleet whose clusters joined long ago is.
	if r.quietLarge, err = waitQuiet(ctx, srv.pid(), f.agentsCPU, 3*time.Minute); err != nil {
		return err
	}
	progress("fleet at rest %s after the last join", r.quietLarge.Round(time.Second))
	rest0, restT := f.agentsCPU(), time.Now()
	if r.serverWatchers, err = settledMem(ctx, srv.pid(), o.settle); err != nil {
		return err
	}
	r.restWait = time.Since(restT)
	r.restLarge = (f.agentsCPU() - rest0).Seconds() / r.restWait.Seconds()
	prof.heap("heap-watchers.pprof")
	slow, err := startSlowTrace(o.traceSlow, o.profDir, o.pprof)
	if err != nil {
		return err
	}
	defer slow.stop()
	r.fanLarge, err = fanout(ctx, f, srv, o.rounds, false, prof, slow)
	if err != nil {
		return fmt.Errorf("fan-out to %d: %w", o.large, err)
	}
	progress("fan-out to %d: p50 %s p99 %s max %s", o.large, ms(pct(r.fanLarge.lat, .5)), ms(pct(r.fanLarge.lat, .99)), ms(maxDur(r.fanLarge.lat)))
	if o.burst {
		if r.fanBurst, err = fanout(ctx, f, srv, o.rounds, true, nil, slow); err != nil {
			return fmt.Errorf("fan-out to %d, changes back to back: %w", o.large, err)
		}
		progress("fan-out to %d, changes back to back: p50 %s p99 %s max %s", o.large, ms(pct(r.fanBurst.lat, .5)), ms(pct(r.fanBurst.lat, .99)), ms(maxDur(r.fanBurst.lat)))
	}
	if r.serverAfterFanout, err = readMem(srv.pid()); err != nil {
		return err
	}
	if !o.noStreams {
		// The server's part alone: the agents stop (their streams close),
		// and another process holds as many watch streams.
		f.stop()
		stopProf := prof.cpu("cpu-streams.pprof", 20*time.Second)
		r.streams, err = streamFanout(ctx, srv, dir, f.serverCA, o.large, o.rounds)
		stopProf()
		if err != nil {
			return fmt.Errorf("stream fan-out to %d: %w", o.large, err)
		}
		progress("stream fan-out to %d: p50 %s p99 %s max %s", o.large, ms(pct(r.streams.lat, .5)), ms(pct(r.streams.lat, .99)), ms(maxDur(r.streams.lat)))
	}
	agentProf := &profiler{addr: o.agentPprof, dir: o.profDir}
	if r.agentIdle, err = leanAgentRSS(ctx, o.agentBin, dir, srv.issuerAddr, srv.admin, f.serverCA, o.settle, agentProf); err != nil {
		return fmt.Errorf("lean agent: %w", err)
	}
	if slow != nil {
		r.slowTraces = slow.saved
	}
	r.warnings, r.firstWarnings = warn.snapshot()
	r.warningKinds = warn.topKinds(8)
	r.serverCerts = srv.certsIssued.Load()
	r.elapsed = time.Since(start)
	r.load0, r.load1 = load0, loadavg()
	r.print(os.Stdout)
	return nil
}

// loadavg is /proc/loadavg's first three fields.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// progress reports a finished step on stderr, so that a long run shows
// where it is.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func binName(p string) string { return filepath.Base(p) }

func procs() int { return runtime.GOMAXPROCS(0) }

func numCPU() int { return runtime.NumCPU() }
