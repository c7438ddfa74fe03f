package main

import (
	"runtime/metrics"
	"time"
)

// gcStats is what the Go runtime of this process (the in-process agents)
// reports of its collector and allocations. The agents' CPU per change
// swings with how many collections fall inside the measured changes (a
// collection marks every agent's state: gigabytes at 1,000 clusters), and
// the bytes allocated per change are the steadier figure of what a change
// costs the agents.
type gcStats struct {
	cycles uint64        // completed collections
	cpu    time.Duration // the collector's CPU (runtime's estimate)
	alloc  uint64        // bytes allocated on the heap
	live   uint64        // live heap after the last collection (not a difference)
}

var gcMetrics = []string{
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
	"/gc/heap/allocs:bytes",
	"/gc/heap/live:bytes",
}

func readGCStats() gcStats {
	s := make([]metrics.Sample, len(gcMetrics))
	for i, n := range gcMetrics {
		s[i].Name = n
	}
	metrics.Read(s)
	var g gcStats
	if s[0].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindFloat64 {
		g.cpu = time.Duration(s[1].Value.Float64() * float64(time.Second))
	}
	if s[2].Value.Kind() == metrics.KindUint64 {
		g.alloc = s[2].Value.Uint64()
	}
	if s[3].Value.Kind() == metrics.KindUint64 {
		g.live = s[3].Value.Uint64()
	}
	return g
}

// since is g less an earlier reading (live stays g's).
func (g gcStats) since(before gcStats) gcStats {
	return gcStats{cycles: g.cycles - before.cycles, cpu: g.cpu - before.cpu, alloc: g.alloc - before.alloc, live: g.live}
}

// gcEdge is what the agents' collector did over a stretch of time: ends
// collections ended, or, when none did, started says one began (the
// collector's CPU grew by the first pause of a collection alone).
type gcEdge struct {
	ends    uint64
	started bool
}

// edgeOf reads a gcEdge off the difference of two readings.
func edgeOf(d gcStats) gcEdge {
	return gcEdge{ends: d.cycles, started: d.cycles == 0 && d.cpu > 0}
}
