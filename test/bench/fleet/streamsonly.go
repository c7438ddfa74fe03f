package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// streamsOnly measures the server's fan-out alone at fleet scale without
// holding a fleet of agents in memory: clusters join in waves of real
// agents (each issued its intermediate, wrote its Secret and sent its
// CRL), each wave's agents stop once the server's CRL set holds their
// CRLs, and then one process holds a watch stream per cluster while the
// bundle changes. The server then holds what it holds for a real fleet
// (every cluster's intermediate and CRL in its set: the same messages),
// without the status reports that running agents send after each change.
func streamsOnly(ctx context.Context, o options, srv *serveProc, f *fleet, dir string, w io.Writer) error {
	t := time.Now()
	for n := 0; n < o.large; {
		from := len(f.members)
		n = min(n+o.small, o.large)
		if err := f.grow(ctx, n); err != nil {
			return err
		}
		if err := waitCRLs(ctx, srv, f, n); err != nil {
			return err
		}
		f.stopMembers(f.members[from:])
		progress("  %d clusters joined (agents stopped once their CRLs were in the set)", n)
	}
	setup := time.Since(t)
	shape, err := measureBundle(ctx, srv.issuerAddr, f.serverCA)
	if err != nil {
		return err
	}
	before, err := settledMem(ctx, srv.pid(), o.settle)
	if err != nil {
		return err
	}
	// The peak from here on: the streams' first messages (the whole set
	// each) and the changes.
	peakReset := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", srv.pid()), []byte("5"), 0)
	st, err := streamFanout(ctx, srv, dir, f.serverCA, o.large, o.rounds)
	if err != nil {
		return fmt.Errorf("stream fan-out to %d: %w", o.large, err)
	}
	after, err := readMem(srv.pid())
	if err != nil {
		return err
	}
	n := time.Duration(max(st.changes, 1))
	fmt.Fprintf(w, "meshroot bench-fleet -streams-only: %d CPUs, load average %s\n", numCPU(), loadavg())
	fmt.Fprintf(w, "%d clusters joined in waves of %d real agents (stopped after joining) in %s; bundle message: %s\n", o.large, o.small, setup.Round(time.Second), shape)
	fmt.Fprintf(w, "Server fan-out alone (%d watch streams in another process, each its own TLS connection, CRL deltas; admin call start -> received)\n", st.streams)
	fmt.Fprintf(w, "%-8s %8s %10s %10s %10s %14s %18s %18s\n", "streams", "samples", "p50", "p99", "max", "worst change", "server CPU/change", "streams CPU/change")
	fmt.Fprintf(w, "%-8d %8d %10s %10s %10s %14s %18s %18s\n", st.streams, len(st.lat), ms(pct(st.lat, .5)), ms(pct(st.lat, .99)),
		ms(maxDur(st.lat)), ms(pct(st.worst, 1)), ms(st.cpu/n), ms(st.childCPU/n))
	fmt.Fprintf(w, "server RSS: %.1f MiB with no watchers (after %s idle); %.1f MiB after the fan-out with %d streams", mib(before.rss), o.settle, mib(after.rss), st.streams)
	if peakReset == nil {
		fmt.Fprintf(w, ", peak %.1f MiB while they opened and during the changes\n", mib(after.hwm))
	} else {
		fmt.Fprintf(w, " (peak not known: %v)\n", peakReset)
	}
	p := pct(st.lat, .99)
	fmt.Fprintf(w, "goal: p99 < %s at %d watchers: %s (%.2fx of the goal)\n", goalFanoutP99, goalFanoutLarge, met(st.streams >= goalFanoutLarge && p < goalFanoutP99), float64(p)/float64(goalFanoutP99))
	return nil
}

// waitCRLs waits until the server's CRL set holds at least n cluster CRLs.
func waitCRLs(ctx context.Context, srv *serveProc, f *fleet, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		shape, err := measureBundle(ctx, srv.issuerAddr, f.serverCA)
		if err == nil && shape.intermediates >= n && shape.crls >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after 2 min the CRL set holds %+v, want %d cluster CRLs (%v)", shape, n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
