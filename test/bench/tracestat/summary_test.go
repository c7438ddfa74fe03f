package main

import (
	"bytes"
	"context"
	"runtime"
	rtrace "runtime/trace"
	"strings"
	"sync"
	"testing"
	"time"
)

// busyTrace traces a marked change during which two goroutines spin and a
// collection runs, as bench-fleet marks its changes.
func busyTrace(t *testing.T, marked bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := rtrace.Start(&buf); err != nil {
		t.Skipf("tracing is already on: %v", err)
	}
	ctx := context.Background()
	time.Sleep(50 * time.Millisecond) // a quiet stretch before the change
	if marked {
		rtrace.Log(ctx, markCategory, "change start: root prepare")
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for end := time.Now().Add(150 * time.Millisecond); time.Now().Before(end); {
				_ = make([]byte, 64<<10) // work for the collector too
			}
		})
	}
	runtime.GC()
	wg.Wait()
	if marked {
		rtrace.Log(ctx, markCategory, "change applied by every agent: root prepare")
	}
	rtrace.Stop()
	return buf.Bytes()
}

func TestSummariseAroundTheMarkedChange(t *testing.T) {
	s, err := summarise(bytes.NewReader(busyTrace(t, true)), 25*time.Millisecond, 40*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.marks) != 2 || s.marks[0].at != 0 || s.marks[1].at < 150*time.Millisecond || !strings.HasPrefix(s.marks[1].msg, "change applied") {
		t.Fatalf("marks %+v: want the change's start at 0 and its end 150 ms or more later", s.marks)
	}
	if first := s.buckets[0].start; first > -25*time.Millisecond || first < -40*time.Millisecond {
		t.Errorf("the window starts at %s, want 25-40 ms before the change", first)
	}
	var busyBefore, busyDuring, marked float64
	for _, b := range s.buckets {
		switch {
		case b.start < -10*time.Millisecond:
			busyBefore = max(busyBefore, b.busy)
		case b.start >= 0 && b.start < 125*time.Millisecond:
			busyDuring = max(busyDuring, b.busy)
		}
		marked += b.mark
		if b.busy < 0 || b.busy > float64(runtime.GOMAXPROCS(0))+0.01 || b.mark > 1.0001 || b.stw > 1.0001 {
			t.Errorf("bucket at %s out of range: %+v", b.start, b)
		}
	}
	if busyDuring < 0.9 {
		t.Errorf("Ps busy during the spin: %.2f at most, want at least one", busyDuring)
	}
	// The tracer's own writer runs while the test sleeps, and on a loaded
	// machine a goroutine counts as running while its thread waits for a
	// core: the spin is compared with the sleep, not with zero.
	if busyDuring < busyBefore+0.5 {
		t.Errorf("Ps busy: %.2f during the spin, %.2f while the test slept; want the spin at least half a P busier", busyDuring, busyBefore)
	}
	if marked == 0 {
		t.Errorf("no bucket shows the collection's mark phase")
	}
}

func TestSummariseRefusesUnmarkedTraces(t *testing.T) {
	_, err := summarise(bytes.NewReader(busyTrace(t, false)), 25*time.Millisecond, 0)
	if err == nil || !strings.Contains(err.Error(), "-trace-slow") {
		t.Errorf("a trace without marks: %v, want an error naming -trace-slow", err)
	}
	if _, err := summarise(strings.NewReader("not a trace"), time.Millisecond, 0); err == nil {
		t.Errorf("a file that is not a trace was summarised")
	}
	if _, err := summarise(strings.NewReader(""), 0, 0); err == nil || !strings.Contains(err.Error(), "positive bucket") {
		t.Errorf("a zero bucket: %v", err)
	}
}
