package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestByKindPoolsChangesOfOneKind(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	cs := []changeStat{
		{kind: "root prepare", lat: ms(10, 30), call: 5 * time.Millisecond, cpu: 100 * time.Millisecond, agentCPU: 200 * time.Millisecond},
		{kind: "root rollback", lat: ms(7, 8), call: 2 * time.Millisecond, cpu: 40 * time.Millisecond, agentCPU: 60 * time.Millisecond},
		{kind: "root prepare", lat: ms(50, 20), call: 9 * time.Millisecond, cpu: 300 * time.Millisecond, agentCPU: 400 * time.Millisecond},
	}
	ks := byKind(cs)
	if len(ks) != 2 || ks[0].kind != "root prepare" || ks[1].kind != "root rollback" {
		t.Fatalf("kinds %+v, want root prepare then root rollback", ks)
	}
	p := ks[0]
	if !slices.Equal(p.lat, ms(10, 30, 50, 20)) {
		t.Errorf("prepare latencies %v, want both changes' agents", p.lat)
	}
	if !slices.Equal(p.worst, ms(30, 50)) {
		t.Errorf("prepare last agents %v, want 30ms and 50ms", p.worst)
	}
	if !slices.Equal(p.calls, ms(5, 9)) {
		t.Errorf("prepare admin calls %v", p.calls)
	}
	if p.cpu != 200*time.Millisecond || p.agentCPU != 300*time.Millisecond {
		t.Errorf("prepare CPU per change %v / %v, want the means 200ms / 300ms", p.cpu, p.agentCPU)
	}
	if r := ks[1]; r.cpu != 40*time.Millisecond || len(r.lat) != 2 {
		t.Errorf("rollback %+v", r)
	}
	if all := allChanges(cs); !slices.Equal(all.worst, ms(30, 8, 50)) || !slices.Equal(all.calls, ms(5, 2, 9)) {
		t.Errorf("all changes: last agents %v, admin calls %v; want each change's, in order", all.worst, all.calls)
	}
}

func TestChangeProfileNames(t *testing.T) {
	if got := changeProfile("root prepare", 3); got != "cpu-prepare-03.pprof" {
		t.Errorf("changeProfile = %q", got)
	}
	if got := changeProfile("rollback", 12); got != "cpu-rollback-12.pprof" {
		t.Errorf("changeProfile = %q", got)
	}
}

func TestProcStatSteal(t *testing.T) {
	stat := "cpu  623752 96 128837 722427 3007 0 6368 28535 0 0\ncpu0 311876 48 64418 361213 1503 0 3184 14267 0 0\n"
	if got, want := procStatSteal([]byte(stat)), 285350*time.Millisecond; got != want {
		t.Errorf("steal %v, want %v (28535 ticks of the cpu line)", got, want)
	}
	if got := procStatSteal([]byte("cpu0 1 2 3 4 5 6 7 8 9 10\n")); got != 0 {
		t.Errorf("steal %v from a file without the cpu line, want 0", got)
	}
	if got := procStatSteal([]byte("cpu  1 2 3 4\n")); got != 0 {
		t.Errorf("steal %v from a kernel without the field, want 0", got)
	}
}

func TestChangeTraceNames(t *testing.T) {
	for _, c := range []struct {
		kind  string
		n     int
		burst bool
		want  string
	}{
		{"root prepare", 3, false, "trace-prepare-03.trace"},
		{"rollback", 12, true, "trace-b2b-rollback-12.trace"},
	} {
		if got := changeTrace(c.kind, c.n, c.burst); got != c.want {
			t.Errorf("changeTrace(%q, %d, %v) = %q, want %q", c.kind, c.n, c.burst, got, c.want)
		}
	}
}

func TestGCMarks(t *testing.T) {
	end, start, none := gcEdge{ends: 1}, gcEdge{started: true}, gcEdge{}
	during := []gcEdge{none, start, none, none, end, none, {ends: 2}, none, none, none, none}
	before := []gcEdge{none, none, none, none, none, none, none, start, none, end, none}
	// 1 starts, 2-3 inside its mark, 4 sees it end; 6 two end; one starts
	// in the wait before 7 (7-8 inside it) and ends in the wait before 9.
	got := strings.Join(gcMarks(during, before, false), ",")
	if want := ",+,~,~,*,,*,~,~,,"; got != want {
		t.Errorf("one process: %q, want %q", got, want)
	}
	got = strings.Join(gcMarks(during, before, true), ",")
	if want := ",,,,*1,,*2,,,,"; got != want {
		t.Errorf("shards: %q, want %q", got, want)
	}
	if got := strings.Join(gcMarks([]gcEdge{none, none}, nil, false), ","); got != "," {
		t.Errorf("nothing recorded before: %q", got)
	}
}

func TestEdgeOf(t *testing.T) {
	if e := edgeOf(gcStats{cycles: 0, cpu: time.Microsecond}); e.ends != 0 || !e.started {
		t.Errorf("the collector's CPU grew with no end: %+v, want a start", e)
	}
	if e := edgeOf(gcStats{cycles: 1, cpu: time.Second}); e.ends != 1 || e.started {
		t.Errorf("one ended: %+v, want an end alone", e)
	}
	if e := edgeOf(gcStats{}); e.ends != 0 || e.started {
		t.Errorf("nothing happened: %+v", e)
	}
}
