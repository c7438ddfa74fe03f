package agent

import (
	"runtime/debug"
	"runtime/metrics"
)

// returnMemoryAfter is how much the process must have allocated since the
// agent last returned memory to the OS for it to do so again after a
// reconcile: a recheck of a small fleet's Secret allocates a few hundred
// KB, a change of a 1,000-cluster fleet's set several MB.
const returnMemoryAfter = 1 << 20

// memoryReturn returns the heap a reconcile freed to the OS
// (Config.ReturnMemory). Without it the Go runtime keeps up to its heap
// goal (twice the live heap at the last collection, at least 4 MB)
// resident, so an idle agent holds the peak of its last reconcile: in a
// 71-cluster fleet, 8-9 MiB of anonymous memory for 1-3 MB of live data.
// Only the Run loop uses it.
type memoryReturn struct {
	enabled   bool
	last      uint64        // allocated bytes when memory was last returned
	allocated func() uint64 // bytes allocated by the process so far
	free      func()        // collect, and return the free heap to the OS
}

// newMemoryReturn returns memory to the OS after reconciles when enabled,
// measuring allocations with runtime/metrics.
func newMemoryReturn(enabled bool) memoryReturn {
	return memoryReturn{enabled: enabled, allocated: heapAllocated, free: debug.FreeOSMemory}
}

// afterReconcile returns memory to the OS when the process allocated at
// least returnMemoryAfter since it last did; it reports whether it did.
func (m *memoryReturn) afterReconcile() bool {
	if !m.enabled {
		return false
	}
	if m.allocated()-m.last < returnMemoryAfter {
		return false
	}
	m.free()
	m.last = m.allocated()
	return true
}

// heapAllocated is the bytes the process has allocated on the heap so far.
func heapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0 // unknown to this runtime: never returns memory
	}
	return s[0].Value.Uint64()
}
