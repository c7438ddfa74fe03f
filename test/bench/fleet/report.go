package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// Goals of issue 15.
const (
	goalFanoutP99   = time.Second
	goalRotation    = time.Minute
	goalServerIdle  = 40e6 // bytes
	goalAgentIdle   = 25e6 // bytes
	goalFanoutLarge = 1000
)

type report struct {
	o                      options
	serverIdle             memStatus
	serverWatchers         memStatus
	serverAfterRotation    memStatus
	serverAfterFanout      memStatus
	agentIdle              memStatus
	setupSmall, setupLarge time.Duration
	fanSmall, fanLarge     fanoutResult
	fanBurst               fanoutResult // at -large, changes back to back (-burst)
	// restLarge is the agents' process CPU per second of wall time in the
	// idle wait right before the large fan-out: work the fleet does with
	// no change (late joiners' rechecks, retries, the collector), which
	// the fan-out's "agents CPU/change" also counts.
	restLarge     float64
	restWait      time.Duration
	quietLarge    time.Duration // the wait for the fleet to come to rest after its last join
	streams       streamResult
	rotation      rotationResult
	warnings      int
	warningKinds  []string // the most frequent kinds, with their counts
	serverCerts   int64
	firstWarnings []string
	elapsed       time.Duration
	load0, load1  string
	slowTraces    int // changes whose traces -trace-slow saved
}

// fanouts are the fan-outs measured: to -small and -large agents, each
// change from a fleet at rest, then to -large back to back (when run).
func (r *report) fanouts() []fanoutResult {
	out := []fanoutResult{r.fanSmall, r.fanLarge}
	if r.fanBurst.changes > 0 {
		out = append(out, r.fanBurst)
	}
	return out
}

// label names f in the report's tables: its agents, and "b2b" when its
// changes came back to back.
func (f fanoutResult) label() string {
	if f.burst {
		return fmt.Sprintf("%d b2b", f.agents)
	}
	return fmt.Sprint(f.agents)
}

// kindStat is the changes of one kind in a fan-out, pooled: every
// agent's latency, each change's last agent and admin call, and the mean
// CPU per change.
type kindStat struct {
	kind              string
	lat, worst, calls []time.Duration
	cpu, agentCPU     time.Duration
}

// add pools change c into k (its CPU summed: byKind takes the mean).
func (k *kindStat) add(c changeStat) {
	k.lat = append(k.lat, c.lat...)
	k.worst = append(k.worst, maxDur(c.lat))
	k.calls = append(k.calls, c.call)
	k.cpu += c.cpu
	k.agentCPU += c.agentCPU
}

// allChanges pools every change of cs, whatever its kind (CPU summed).
func allChanges(cs []changeStat) kindStat {
	var k kindStat
	for _, c := range cs {
		k.add(c)
	}
	return k
}

// byKind pools cs by kind, the kinds in the order they first came.
func byKind(cs []changeStat) []kindStat {
	var out []kindStat
	at := map[string]int{}
	for _, c := range cs {
		i, ok := at[c.kind]
		if !ok {
			i = len(out)
			at[c.kind] = i
			out = append(out, kindStat{kind: c.kind})
		}
		out[i].add(c)
	}
	for i := range out {
		n := time.Duration(len(out[i].calls))
		out[i].cpu /= n
		out[i].agentCPU /= n
	}
	return out
}

// pct is the nearest-rank percentile p (0-1] of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "meshroot bench-fleet: %d CPUs (GOMAXPROCS %d), load average %s at start, %s at end (shared machine), %s in all\n",
		numCPU(), procs(), r.load0, r.load1, r.elapsed.Round(time.Second))
	fmt.Fprintf(w, "server:  %s serve, its own process (SQLite store, disk keys), Issuer gRPC/TLS on 127.0.0.1\n", binName(r.o.meshroot))
	if r.o.agentProcs > 1 {
		fmt.Fprintf(w, "agents:  agent.Agent.Run (the real agent code) in %d child processes of this bench (-agent-procs, GOMAXPROCS %d each), the agents dealt out evenly;\n", r.o.agentProcs, shardMaxProcs(r.o.agentProcs))
		fmt.Fprintf(w, "         each agent with its own gRPC/TLS connection over loopback; agents' CPU is the children's and this process's;\n")
	} else {
		fmt.Fprintf(w, "agents:  in-process agent.Agent.Run (the real agent code), each with its own gRPC/TLS connection over loopback;\n")
	}
	if r.o.kubeCopy {
		fmt.Fprintf(w, "         Secrets written to an in-memory kubeclient.Interface per cluster (no kube-apiserver), stored as copies (-kube-copy);\n")
	} else {
		fmt.Fprintf(w, "         Secrets written to an in-memory kubeclient.Interface per cluster (no kube-apiserver), stored without copying the data;\n")
	}
	fmt.Fprintf(w, "         istiod stood in by copying root-cert.pem to istio-ca-root-cert on each write (default istiod gate)\n")
	if r.o.memLimit > 0 {
		fmt.Fprintf(w, "agents' processes: soft memory limit %.1f GiB in all (GOMEMLIMIT, split evenly; every agent holds the fleet's CRL set)\n", float64(r.o.memLimit)/(1<<30))
	}
	if r.o.traceSlow > 0 {
		fmt.Fprintf(w, "traces:  runtime/trace flight recorders on in the fan-outs to %d (-trace-slow %s: the figures include their cost); %d slow changes' traces saved\n", r.fanLarge.agents, r.o.traceSlow, r.slowTraces)
	}
	fmt.Fprintf(w, "applied: the agent's Create/Update of the cacerts Secret returned, with the new bundle sequence\n")
	fmt.Fprintf(w, "bootstrap: %d clusters registered and issued in %s; %d more in %s\n\n",
		r.fanSmall.agents, r.setupSmall.Round(time.Millisecond), r.fanLarge.agents-r.fanSmall.agents, r.setupLarge.Round(time.Millisecond))

	fmt.Fprintf(w, "Trust bundle fan-out (admin call start -> Secret written, every agent, %d changes each: root prepare / rollback)\n", r.fanSmall.changes)
	fmt.Fprintf(w, "each change from a fleet at rest (the agents and the server under %.0f %% of a core for %s; the waits, summed, in the last column);\n", quietCPU*100, quietWindow)
	fmt.Fprintf(w, "b2b: each change as soon as every agent applied the last, its status reports and writes still going on\n")
	fmt.Fprintf(w, "%-8s %8s %10s %10s %10s %14s %14s %18s %18s %10s\n", "agents", "samples", "p50", "p99", "max", "worst change", "admin call p50", "server CPU/change", "agents CPU/change", "rest")
	for _, f := range r.fanouts() {
		n := time.Duration(max(f.changes, 1))
		all := allChanges(f.byChange)
		fmt.Fprintf(w, "%-8s %8d %10s %10s %10s %14s %14s %18s %18s %10s\n", f.label(), len(f.lat), ms(pct(f.lat, .5)), ms(pct(f.lat, .99)),
			ms(maxDur(f.lat)), ms(pct(all.worst, 1)), ms(pct(all.calls, .5)), ms(f.cpu/n), ms(f.selfCPU/n), f.rest.Round(100*time.Millisecond))
	}
	fmt.Fprintf(w, "by kind of change (CPU from each change's start to the next one's, its status reports and istiod rechecks included; b2b: overlapped, not shown)\n")
	fmt.Fprintf(w, "%-8s %-14s %8s %10s %10s %16s %16s %14s %18s %18s\n", "agents", "change", "samples", "p50", "p99", "last agent p50", "last agent max", "admin call p50", "server CPU/change", "agents CPU/change")
	for _, f := range r.fanouts() {
		for _, k := range byKind(f.byChange) {
			cpu, agents := "-", "-"
			if !f.burst {
				cpu, agents = ms(k.cpu), ms(k.agentCPU)
			}
			fmt.Fprintf(w, "%-8s %-14s %8d %10s %10s %16s %16s %14s %18s %18s\n", f.label(), k.kind, len(k.lat), ms(pct(k.lat, .5)), ms(pct(k.lat, .99)),
				ms(pct(k.worst, .5)), ms(maxDur(k.worst)), ms(pct(k.calls, .5)), cpu, agents)
		}
	}
	if f := r.fanLarge; f.changes > 0 && r.restWait > 0 {
		rest := time.Duration(r.restLarge * float64(f.wall) / float64(f.changes))
		fmt.Fprintf(w, "agents at rest before the fan-out to %d (waited %s after the last join for the fleet's CPU to fall under %.0f %% of a core):\n",
			f.agents, r.quietLarge.Round(time.Second), quietCPU*100)
		fmt.Fprintf(w, "  %.0f ms of CPU per s over the next %s; at that rate, %s of each change's %s is background\n",
			r.restLarge*1000, r.restWait.Round(time.Second), ms(rest), ms(f.selfCPU/time.Duration(f.changes)))
	}
	fmt.Fprintf(w, "agents' processes (Go runtime, summed) over each fan-out: collections; collector CPU and heap allocated per change; live heap after\n")
	for _, f := range r.fanouts() {
		n := max(f.changes, 1)
		fmt.Fprintf(w, "  %s agents: %d collections, %s and %.1f MiB per change, %.0f MiB live\n",
			f.label(), f.gc.cycles, ms(f.gc.cpu/time.Duration(n)), float64(f.gc.alloc)/float64(n)/(1<<20), float64(f.gc.live)/(1<<20))
	}
	fmt.Fprintf(w, "each change's last agent (ms; * a collection of an agents' process ended during the change, with shards the count;\n")
	fmt.Fprintf(w, "  in one process, + one started and ~ one started earlier still marking: the whole change inside its mark phase):\n")
	for _, f := range r.fanouts() {
		fmt.Fprintf(w, "  %s agents:", f.label())
		marks := gcMarks(f.gcDuring, f.gcBefore, r.o.agentProcs > 1)
		for i, d := range allChanges(f.byChange).worst {
			mark := ""
			if i < len(marks) {
				mark = marks[i]
			}
			fmt.Fprintf(w, " %.0f%s", float64(d)/1e6, mark)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "steal during each change (ms of CPU the hypervisor gave others, both CPUs, admin call start -> every agent applied):\n")
	for _, f := range r.fanouts() {
		fmt.Fprintf(w, "  %s agents:", f.label())
		for _, c := range f.byChange {
			fmt.Fprintf(w, " %.0f", float64(c.steal)/1e6)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "cacerts Secret reads / writes per agent per change:")
	for _, f := range r.fanouts() {
		if n := float64(f.agents * f.changes); n > 0 {
			fmt.Fprintf(w, " %.2f / %.2f at %s;", float64(f.reads)/n, float64(f.writes)/n, f.label())
		}
	}
	fmt.Fprintf(w, " at 1,000 clusters each is a ~1 MB Secret\n")
	fmt.Fprintf(w, "Received (admin call start -> the agent's watch delivered the new bundle, before the agent's own work)\n")
	fmt.Fprintf(w, "%-8s %8s %10s %10s %10s %8s\n", "agents", "samples", "p50", "p99", "max", "missed")
	for _, f := range r.fanouts() {
		fmt.Fprintf(w, "%-8s %8d %10s %10s %10s %8d\n", f.label(), len(f.recv), ms(pct(f.recv, .5)), ms(pct(f.recv, .99)), ms(maxDur(f.recv)), f.missed)
	}
	if st := r.streams; st.changes > 0 {
		n := time.Duration(st.changes)
		fmt.Fprintf(w, "Server fan-out alone (the agents stopped; %d watch streams in another process, each its own TLS connection,\n", st.streams)
		fmt.Fprintf(w, "asking for CRL deltas as agents do; receive and decode only; admin call start -> received; streams opened in %s)\n", st.setup.Round(time.Millisecond))
		fmt.Fprintf(w, "%-8s %8s %10s %10s %10s %14s %18s %18s\n", "streams", "samples", "p50", "p99", "max", "worst change", "server CPU/change", "streams CPU/change")
		fmt.Fprintf(w, "%-8d %8d %10s %10s %10s %14s %18s %18s\n", st.streams, len(st.lat), ms(pct(st.lat, .5)), ms(pct(st.lat, .99)),
			ms(maxDur(st.lat)), ms(pct(st.worst, 1)), ms(st.cpu/n), ms(st.childCPU/n))
	}
	for _, f := range []fanoutResult{r.fanSmall, r.fanLarge} {
		fmt.Fprintf(w, "bundle message at %d clusters: %s\n", f.agents, f.bundle)
	}
	if r.fanSmall.agents > 0 && len(r.fanSmall.lat) > 0 {
		fmt.Fprintf(w, "p99 at %d vs at %d agents: %.2fx for %.0fx the agents\n\n", r.fanLarge.agents, r.fanSmall.agents,
			float64(pct(r.fanLarge.lat, .99))/float64(pct(r.fanSmall.lat, .99)), float64(r.fanLarge.agents)/float64(r.fanSmall.agents))
	}

	fmt.Fprintf(w, "Root rotation of %d clusters through the admin API (each phase as soon as its gate lets it)\n", r.rotation.clusters)
	for _, p := range r.rotation.phases {
		fmt.Fprintf(w, "  %-66s %10s  %s\n", p.name, ms(p.d), p.note)
	}
	fmt.Fprintf(w, "  %-66s %10s  server CPU %s\n\n", "total", ms(r.rotation.total()), r.rotation.cpu.Round(10*time.Millisecond))

	fmt.Fprintf(w, "Memory (VmRSS from /proc, after %s idle; VmHWM is the peak so far; the server and the lean agent run from\n"+
		"their own copies of the binaries, dropped from the page cache, as in make bench-idle)\n", r.o.settle)
	for _, m := range []struct {
		name string
		m    memStatus
	}{
		{"server idle (root, no agents)", r.serverIdle},
		{fmt.Sprintf("server after the rotation (%d watchers)", r.fanSmall.agents), r.serverAfterRotation},
		{fmt.Sprintf("server with %d watchers, idle", r.fanLarge.agents), r.serverWatchers},
		{fmt.Sprintf("server right after the %d-agent fan-out", r.fanLarge.agents), r.serverAfterFanout},
		{fmt.Sprintf("lean agent idle (%s --out, joined to the %d-cluster fleet)", binName(r.o.agentBin), r.fanLarge.agents+1), r.agentIdle},
	} {
		fmt.Fprintf(w, "  %-52s %7.1f MiB (%5.1f MB; file %5.1f + anon %6.1f MiB)   peak %7.1f MiB   %5d fds %4d threads\n",
			m.name, mib(m.m.rss), mb(m.m.rss), mib(m.m.file), mib(m.m.anon), mib(m.m.hwm), m.m.fds, m.m.threads)
	}
	if r.serverIdle.rss > 0 {
		fmt.Fprintf(w, "  per watcher: %.1f KiB (server RSS with %d watchers less idle, / %d)\n\n",
			float64(r.serverWatchers.rss-r.serverIdle.rss)/1024/float64(r.fanLarge.agents), r.fanLarge.agents, r.fanLarge.agents)
	}

	fmt.Fprintf(w, "Goals\n")
	// The fan-out goal is set at goalFanoutLarge watchers: a smaller run
	// is not judged against it.
	fanout := func(n int, ok bool) string {
		if n < goalFanoutLarge {
			return fmt.Sprintf("not judged (the goal is at %d)", goalFanoutLarge)
		}
		return met(ok)
	}
	large := pct(r.fanLarge.lat, .99)
	fmt.Fprintf(w, "  fan-out p99 at %d agents   %10s   goal < %s     %.2fx of the goal   %s\n", r.fanLarge.agents, ms(large), goalFanoutP99,
		float64(large)/float64(goalFanoutP99), fanout(r.fanLarge.agents, large < goalFanoutP99))
	recv := pct(r.fanLarge.recv, .99)
	fmt.Fprintf(w, "  ... received, p99 at %d     %10s   goal < %s     %.2fx of the goal   %s (delivery only: the agents share this machine's cores)\n", r.fanLarge.agents, ms(recv), goalFanoutP99,
		float64(recv)/float64(goalFanoutP99), fanout(r.fanLarge.agents, recv < goalFanoutP99 && r.fanLarge.missed == 0))
	if b := r.fanBurst; b.changes > 0 {
		p := pct(b.lat, .99)
		fmt.Fprintf(w, "  ... back to back, p99 at %d %10s   goal < %s     %.2fx of the goal   %s (each change right after the last reached every agent: the last one's reports and writes compete)\n", b.agents, ms(p), goalFanoutP99,
			float64(p)/float64(goalFanoutP99), fanout(b.agents, p < goalFanoutP99))
	}
	if st := r.streams; st.changes > 0 {
		p := pct(st.lat, .99)
		fmt.Fprintf(w, "  ... server alone, p99 at %d  %10s   goal < %s     %.2fx of the goal   %s (watch streams only, the agents stopped)\n", st.streams, ms(p), goalFanoutP99,
			float64(p)/float64(goalFanoutP99), fanout(st.streams, p < goalFanoutP99))
	}
	fmt.Fprintf(w, "  rotation of %d clusters     %10s   goal < %s    %.2fx of the goal   %s\n", r.rotation.clusters, ms(r.rotation.total()), goalRotation,
		float64(r.rotation.total())/float64(goalRotation), met(r.rotation.total() < goalRotation))
	fmt.Fprintf(w, "  server idle RSS              %7.1f MB   goal < 40 MB    %.2fx of the goal   %s\n", mb(r.serverIdle.rss),
		float64(r.serverIdle.rss)/goalServerIdle, met(float64(r.serverIdle.rss) < goalServerIdle))
	fmt.Fprintf(w, "  agent idle RSS               %7.1f MB   goal < 25 MB    %.2fx of the goal   %s (joined to the %d-cluster fleet, whose CRLs it keeps; make bench-idle: a one-cluster fleet)\n", mb(r.agentIdle.rss),
		float64(r.agentIdle.rss)/goalAgentIdle, met(float64(r.agentIdle.rss) < goalAgentIdle), r.fanLarge.agents+1)
	fmt.Fprintf(w, "\nserver certificates the server issued itself over the run: %d\n", r.serverCerts)
	fmt.Fprintf(w, "agent warnings and errors logged: %d\n", r.warnings)
	if len(r.warningKinds) > 0 {
		fmt.Fprintf(w, "  by kind (numbers blanked as #), the most frequent first:\n")
		for _, s := range r.warningKinds {
			fmt.Fprintf(w, "  %s\n", s)
		}
		fmt.Fprintf(w, "  the first ones:\n")
	}
	for _, s := range r.firstWarnings {
		fmt.Fprintf(w, "  %s\n", s)
	}
}

// gcMarks marks each change by the agents' collections during it, and
// before it (since the last change's end): "*" one ended during it (with
// shards, "*N": N ended across them); in one process, "+" one started
// during it and none ended, and "~" one was marking when it started
// (begun during an earlier change or the wait before it, not ended since)
// and went on through it. A stretch in which one ended and another
// started counts as an end alone.
func gcMarks(during, before []gcEdge, shards bool) []string {
	out := make([]string, len(during))
	marking := false
	for i, d := range during {
		if i < len(before) {
			if b := before[i]; b.ends > 0 {
				marking = false
			} else if b.started {
				marking = true
			}
		}
		switch {
		case d.ends > 0:
			out[i] = "*"
			if shards {
				out[i] += fmt.Sprint(d.ends)
			}
			marking = false
		case shards:
		case d.started:
			out[i] = "+"
			marking = true
		case marking:
			out[i] = "~"
		}
	}
	return out
}
