package main

import (
	"context"
	"fmt"
	"os"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// fanoutResult is what one fan-out measurement found.
type fanoutResult struct {
	agents  int
	changes int
	lat     []time.Duration // one per agent per change: admin call start -> Secret written
	recv    []time.Duration // one per agent per change: admin call start -> the watch delivered it
	// gcDuring and gcBefore are, per change, the agents' collections
	// that ended or started during it, and between the last change's end
	// and its start (the wait for rest).
	gcDuring, gcBefore []gcEdge
	missed             int           // receipts not logged (the agent applied without logging it)
	cpu                time.Duration // server CPU time over the whole measurement
	selfCPU            time.Duration // this process's (the agents') CPU time
	reads              int           // the agents' reads of their cacerts Secrets over the measurement
	writes             int           // and their writes
	bundle             bundleShape   // the message each watcher got, after the last change
	gc                 gcStats       // this process's collector over the measurement
	wall               time.Duration
	// burst: each change right after every agent applied the last, not
	// from a fleet at rest.
	burst bool
	rest  time.Duration // the waits for the fleet to come to rest, summed (not burst)
	// byChange: each change's own figures, in order.
	byChange []changeStat
}

// changeStat is one change of a fan-out: its kind (bundleChange.name),
// every agent's latency, its admin call, and (from a fleet at rest) the
// CPU from its start to the next change's (its aftermath included: the
// status reports, the istiod rechecks).
type changeStat struct {
	kind          string
	lat           []time.Duration
	call          time.Duration
	cpu, agentCPU time.Duration // 0 when burst: the changes' work overlaps
	// steal is the CPU time the hypervisor gave other guests while this
	// machine's guest wanted it, summed over its CPUs, from the admin
	// call's start until every agent applied (/proc/stat).
	steal time.Duration
}

// fanout makes 2*rounds trust bundle changes (root prepare, then
// rollback: the bundle gains a root, then loses it, the sequence going up
// by one each time) and times each agent's write of each new bundle,
// counted from the start of the admin call that commits it.
//
// Unless burst, each change starts from a fleet at rest (waitQuiet, at
// most changeRestLimit): a change's latency is its own, not the last
// change's status reports and writes too; after the last change the fleet
// comes to rest as well, so that the CPU figures hold every change's
// work (and the waits' background, which the report's rest rate shows).
// With burst each change starts as soon as every agent applied the last.
//
// With prof on (and not burst), each change is CPU-profiled, the server
// and the agents, for prof.window from the start of its admin call:
// cpu-<kind>-<n>.pprof, n counting the changes from 1. With slow on, the
// traces of each change whose slowest agent took slow.min or more are
// saved as it ends.
func fanout(ctx context.Context, f *fleet, srv *serveProc, rounds int, burst bool, prof *profiler, slow *slowTrace) (fanoutResult, error) {
	res := fanoutResult{agents: len(f.members), burst: burst}
	cpu0, self0 := cpuTime(srv.pid()), f.agentsCPU()
	gc0 := f.gcStats()
	gcLast := gc0 // at the last change's end
	reads0, writes0 := f.secretIO()
	t := time.Now()
	var cpuAt, selfAt time.Duration // at the last change's start
	rest := func() error {
		if burst {
			return nil
		}
		d, err := waitQuiet(ctx, srv.pid(), f.agentsCPU, changeRestLimit)
		res.rest += d
		if n := len(res.byChange); n > 0 {
			c := &res.byChange[n-1]
			c.cpu, c.agentCPU = cpuTime(srv.pid())-cpuAt, f.agentsCPU()-selfAt
		}
		return err
	}
	for range rounds {
		for _, step := range bundleChanges(ctx, srv) {
			if err := rest(); err != nil {
				return res, err
			}
			tb, err := srv.admin.TrustBundle(ctx)
			if err != nil {
				return res, err
			}
			want := tb.Sequence + 1
			gcAt := f.gcStats()
			res.gcBefore = append(res.gcBefore, edgeOf(gcAt.since(gcLast)))
			stopProf := func() {}
			if !burst {
				stopProf = prof.change(changeProfile(step.name, res.changes+1))
			}
			cpuAt, selfAt = cpuTime(srv.pid()), f.agentsCPU()
			steal0 := stealTime()
			trace.Log(ctx, traceCategory, "change start: "+step.name) // a mark in -trace-slow's traces
			t0 := time.Now()
			if err := step.do(); err != nil {
				stopProf()
				return res, fmt.Errorf("%s: %w", step.name, err)
			}
			call := time.Since(t0)
			lat, err := f.waitAll(ctx, t0, nil, func(a applied) bool { return a.sequence >= want }, 2*time.Minute)
			trace.Log(ctx, traceCategory, "change applied by every agent: "+step.name)
			stopProf()
			if err != nil {
				return res, fmt.Errorf("after %s: %w", step.name, err)
			}
			slow.changeDone(step.name, res.changes+1, burst, maxDur(lat))
			res.byChange = append(res.byChange, changeStat{kind: step.name, lat: lat, call: call, steal: stealTime() - steal0})
			res.lat = append(res.lat, lat...)
			for _, m := range f.members {
				if at, ok := m.rec.firstReceived(t0, want); ok {
					res.recv = append(res.recv, at.Sub(t0))
				} else {
					res.missed++
				}
			}
			gcLast = f.gcStats()
			res.gcDuring = append(res.gcDuring, edgeOf(gcLast.since(gcAt)))
			res.changes++
		}
	}
	if err := rest(); err != nil {
		return res, err
	}
	res.wall = time.Since(t)
	res.cpu = cpuTime(srv.pid()) - cpu0
	res.selfCPU = f.agentsCPU() - self0
	res.gc = f.gcStats().since(gc0)
	reads, writes := f.secretIO()
	res.reads, res.writes = reads-reads0, writes-writes0
	if b, err := measureBundle(ctx, srv.issuerAddr, f.serverCA); err == nil {
		res.bundle = b
	} else {
		fmt.Fprintf(os.Stderr, "sizing the bundle message: %v\n", err)
	}
	return res, nil
}

// changeProfile names the CPU profile of the fan-out's change n of kind:
// cpu-<kind's last word>-<n>.pprof (cpu-prepare-01.pprof).
func changeProfile(kind string, n int) string {
	return fmt.Sprintf("cpu-%s-%02d.pprof", kindWord(kind), n)
}

// kindWord is the last word of a change's kind ("prepare" of "root
// prepare"), as the files of one change are named.
func kindWord(kind string) string {
	return kind[strings.LastIndexByte(kind, ' ')+1:]
}

// quietCPU is the CPU, as a share of one core, below which the agents'
// process and the server count as at rest (waitQuiet), measured over
// quietWindow: with no change, a fleet's agents and server only answer
// keepalives and timers.
const (
	quietCPU    = 0.05
	quietWindow = 2 * time.Second
	// changeRestLimit bounds the wait for rest between two changes.
	changeRestLimit = 30 * time.Second
)

// waitQuiet waits until the agents (agentsCPU) and the server each use
// less than quietCPU of a core over quietWindow, or until limit has
// passed (then it goes on: the rest rate the report prints shows it). It
// returns how long it waited.
func waitQuiet(ctx context.Context, serverPID int, agentsCPU func() time.Duration, limit time.Duration) (time.Duration, error) {
	t := time.Now()
	for time.Since(t) < limit {
		self0, srv0 := agentsCPU(), cpuTime(serverPID)
		select {
		case <-ctx.Done():
			return time.Since(t), ctx.Err()
		case <-time.After(quietWindow):
		}
		self, srv := agentsCPU()-self0, cpuTime(serverPID)-srv0
		if self.Seconds() < quietCPU*quietWindow.Seconds() && srv.Seconds() < quietCPU*quietWindow.Seconds() {
			break
		}
	}
	return time.Since(t), nil
}

// bundleChange is one admin call that changes the trust bundle.
type bundleChange struct {
	name string
	do   func() error
}

// bundleChanges are a round of the fan-outs: root prepare (the bundle
// gains a root), then rollback (it loses it), the sequence up by one each.
func bundleChanges(ctx context.Context, srv *serveProc) []bundleChange {
	return []bundleChange{
		{"root prepare", func() error { _, err := srv.admin.PrepareRoot(ctx, ca.PrepareRootRequest{}); return err }},
		{"root rollback", func() error { _, err := srv.admin.RollbackPrepared(ctx, ca.PhaseRequest{}); return err }},
	}
}

// phase is one timed step of the rotation.
type phase struct {
	name string
	d    time.Duration
	note string
}

type rotationResult struct {
	clusters int
	phases   []phase
	cpu      time.Duration
}

func (r rotationResult) total() time.Duration {
	var t time.Duration
	for _, p := range r.phases {
		t += p.d
	}
	return t
}

// workloadTTL is retire's wait: the least the admin API carries (whole
// seconds; 0 means the 24 h default).
const workloadTTL = time.Second

// rotate runs a full rotation through the admin API: prepare, every
// agent applied the bundle with the new root, activate (as soon as its
// gate lets it), every agent wrote an intermediate from the new root,
// retire (as soon as its gate lets it, workload TTL 1 s), every agent
// dropped the old root.
func rotate(ctx context.Context, f *fleet, srv *serveProc) (rotationResult, error) {
	res := rotationResult{clusters: len(f.members)}
	cpu0 := cpuTime(srv.pid())
	tb, err := srv.admin.TrustBundle(ctx)
	if err != nil {
		return res, err
	}
	seq := tb.Sequence
	mark := time.Now()
	step := func(name, note string) {
		now := time.Now()
		res.phases = append(res.phases, phase{name: name, d: now.Sub(mark), note: note})
		mark = now
	}
	// Each wait counts the agents' writes from the start of the admin call
	// that commits the change: a fast agent applies it before the call
	// returns.
	called := time.Now()
	newRoot, err := srv.admin.PrepareRoot(ctx, ca.PrepareRootRequest{})
	if err != nil {
		return res, fmt.Errorf("root prepare: %w", err)
	}
	step("root prepare (admin call)", "new root "+newRoot.ID[:8]+", bundle sequence +1")
	if _, err := f.waitAll(ctx, called, nil, func(a applied) bool { return a.sequence > seq }, 2*time.Minute); err != nil {
		return res, err
	}
	step("-> all agents applied the bundle with both roots", "")
	tries, called, err := whenUngated(ctx, srv, 0, func() (ca.PhaseResult, error) { return srv.admin.ActivateRoot(ctx, ca.PhaseRequest{}) })
	if err != nil {
		return res, fmt.Errorf("root activate: %w", err)
	}
	step("root activate (gate: every cluster reported it, istiod loaded)", fmt.Sprintf("%d status polls", tries))
	if _, err := f.waitAll(ctx, called, nil, func(a applied) bool { return a.rootID == newRoot.ID }, 2*time.Minute); err != nil {
		return res, err
	}
	step("-> all agents wrote an intermediate from the new root", "")
	tries, called, err = whenUngated(ctx, srv, workloadTTL, func() (ca.PhaseResult, error) {
		return srv.admin.RetireRoot(ctx, ca.PhaseRequest{WorkloadCertTTL: workloadTTL})
	})
	if err != nil {
		return res, fmt.Errorf("root retire: %w", err)
	}
	step("root retire (gate: reported, istiod loaded; workload TTL 1 s)", fmt.Sprintf("%d status polls", tries))
	if _, err := f.waitAll(ctx, called, nil, func(a applied) bool { return a.sequence > seq+1 && a.roots == 1 }, 2*time.Minute); err != nil {
		return res, err
	}
	step("-> all agents dropped the old root", "")
	res.cpu = cpuTime(srv.pid()) - cpu0
	return res, nil
}

// whenUngated polls `root status` (a dry run of the next phase) every
// 50 ms until it names no blocker, then runs the phase; a phase refused
// because a report arrived between the two is tried again. It returns how
// many status polls it took, and when the call that ran the phase started.
func whenUngated(ctx context.Context, srv *serveProc, ttl time.Duration, phase func() (ca.PhaseResult, error)) (int, time.Time, error) {
	deadline := time.Now().Add(2 * time.Minute)
	polls := 0
	var last string
	for time.Now().Before(deadline) {
		st, err := srv.admin.RotationStatus(ctx, ttl)
		polls++
		if err != nil {
			return polls, time.Time{}, err
		}
		if len(st.Blockers) == 0 {
			called := time.Now()
			res, err := phase()
			if err == nil && res.Done {
				return polls, called, nil
			}
			last = fmt.Sprintf("%v %v", err, res.Blockers)
		} else {
			last = fmt.Sprintf("%d blockers, e.g. %s: %s", len(st.Blockers), st.Blockers[0].Cluster, st.Blockers[0].Reason)
		}
		select {
		case <-ctx.Done():
			return polls, time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return polls, time.Time{}, fmt.Errorf("still gated after 2 min: %s", last)
}

// cpuTime is a process's user+system CPU time, from /proc/PID/stat.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// fields[0] is the state (field 3); utime and stime are fields 14, 15.
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// stealTime is the machine's steal time so far, all CPUs summed (0 when
// unknown).
func stealTime() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	return procStatSteal(b)
}

// procStatSteal is the steal time in a /proc/stat: the eighth number of
// its first line, the cpu line, in USER_HZ ticks (0 when it has none).
func procStatSteal(b []byte) time.Duration {
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0
	}
	n, _ := strconv.ParseInt(fields[8], 10, 64)
	return time.Duration(n) * time.Second / 100
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
