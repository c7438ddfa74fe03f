package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// markCategory is the trace.Log category bench-fleet marks its changes in;
// a change's start is logged as "change start: <kind>", and its last
// agent's write as "change applied by every agent: <kind>".
const (
	markCategory = "bench-fleet"
	startPrefix  = "change start"
)

// summary is a trace around the last change it marks.
type summary struct {
	length  time.Duration // of the whole trace
	marks   []mark        // every bench-fleet mark, relative to the change's start
	buckets []bucket      // from before the change's start to its last mark
}

type mark struct {
	at  time.Duration
	msg string
}

// bucket is one stretch of the window: busy is the Ps running goroutines
// (goroutine running time over the bucket's length), runnable the
// goroutines waiting for a P (likewise averaged), mark and stw the share
// of the bucket inside the collector's mark phase and inside stops of the
// world.
type bucket struct {
	start          time.Duration // from the change's start
	busy, runnable float64
	mark, stw      float64
}

type span struct{ a, b trace.Time }

// summarise reads a trace and summarises it from before the last change's
// start to 300 ms past the mark after it (or the trace's end), in
// buckets of width.
func summarise(r io.Reader, width, before time.Duration) (*summary, error) {
	if width <= 0 || before < 0 {
		return nil, fmt.Errorf("bucket %s, before %s: want a positive bucket and a window that is not negative", width, before)
	}
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not a Go execution trace: %w", err)
	}
	var (
		running, runnable, marking, stopped []span
		runFrom, readyFrom                  = map[trace.GoID]trace.Time{}, map[trace.GoID]trace.Time{}
		markFrom, stopFrom                  trace.Time
		first, last                         trace.Time
		logs                                []struct {
			t   trace.Time
			msg string
		}
	)
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the trace: %w", err)
		}
		t := ev.Time()
		if first == 0 {
			first = t
		}
		last = t
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			track(&running, runFrom, id, t, from == trace.GoRunning, to == trace.GoRunning)
			track(&runnable, readyFrom, id, t, from == trace.GoRunnable, to == trace.GoRunnable)
		case trace.EventRangeBegin, trace.EventRangeEnd:
			name, begin := ev.Range().Name, ev.Kind() == trace.EventRangeBegin
			switch {
			case strings.HasPrefix(name, "GC concurrent mark"):
				rangeEdge(&marking, &markFrom, t, begin)
			case strings.HasPrefix(name, "stop-the-world"):
				rangeEdge(&stopped, &stopFrom, t, begin)
			}
		case trace.EventLog:
			if l := ev.Log(); l.Category == markCategory {
				logs = append(logs, struct {
					t   trace.Time
					msg string
				}{t, l.Message})
			}
		}
	}
	// What is still open at the trace's end runs to its end.
	for _, a := range runFrom {
		running = append(running, span{a, last})
	}
	for _, a := range readyFrom {
		runnable = append(runnable, span{a, last})
	}
	if markFrom != 0 {
		marking = append(marking, span{markFrom, last})
	}
	start, k := trace.Time(0), -1
	for i, l := range logs {
		if strings.HasPrefix(l.msg, startPrefix) {
			start, k = l.t, i
		}
	}
	if k < 0 {
		return nil, errors.New("no change is marked in it (bench-fleet logs each change's start under the category " + markCategory + ": was it saved by -trace-slow?)")
	}
	s := &summary{length: time.Duration(last - first)}
	for _, l := range logs {
		s.marks = append(s.marks, mark{time.Duration(l.t - start), l.msg})
	}
	from := max(first, start-trace.Time(before))
	to := last
	if k+1 < len(logs) {
		to = min(last, logs[k+1].t+trace.Time(300*time.Millisecond))
	}
	n := int((to-from)/trace.Time(width)) + 1
	s.buckets = make([]bucket, n)
	for i := range s.buckets {
		s.buckets[i].start = time.Duration(from-start) + time.Duration(i)*width
	}
	w := float64(width)
	spread(running, from, to, width, func(i int, d float64) { s.buckets[i].busy += d / w })
	spread(runnable, from, to, width, func(i int, d float64) { s.buckets[i].runnable += d / w })
	spread(marking, from, to, width, func(i int, d float64) { s.buckets[i].mark += d / w })
	spread(stopped, from, to, width, func(i int, d float64) { s.buckets[i].stw += d / w })
	return s, nil
}

// track closes id's span in spans when it leaves a state (was) and opens
// one when it enters it (is).
func track(spans *[]span, open map[trace.GoID]trace.Time, id trace.GoID, t trace.Time, was, is bool) {
	if was && !is {
		if a, ok := open[id]; ok {
			*spans = append(*spans, span{a, t})
			delete(open, id)
		}
	}
	if is && !was {
		open[id] = t
	}
}

// rangeEdge opens (begin) or closes a range's span.
func rangeEdge(spans *[]span, open *trace.Time, t trace.Time, begin bool) {
	if begin {
		*open = t
		return
	}
	if *open != 0 {
		*spans = append(*spans, span{*open, t})
		*open = 0
	}
}

// spread adds each span's time inside [from, to) to the buckets it covers.
func spread(spans []span, from, to trace.Time, width time.Duration, add func(i int, d float64)) {
	wd := trace.Time(width)
	for _, s := range spans {
		a, b := max(s.a, from), min(s.b, to)
		for a < b {
			i := int((a - from) / wd)
			end := min(from+trace.Time(i+1)*wd, b)
			add(i, float64(end-a))
			a = end
		}
	}
}
