// Command tracestat reads a runtime/trace that bench-fleet's -trace-slow
// saved (bench-trace-<kind>-<n>.trace: the in-process agents) and prints,
// around the last change it marks, what the process's Ps did in each
// bucket of time: how many were busy running goroutines, how many
// goroutines were runnable and waiting for one, and the share of the
// bucket that the collector was marking or had the world stopped. A slow
// change with every P busy, a long run queue and the mark on is the
// agents' shared heap being collected; idle Ps with the change still
// undelivered point at the server or the network instead.
//
//	go run . [-bucket 100ms] [-before 1s] bench-trace-prepare-07.trace
//
// It is its own module (golang.org/x/exp/trace reads the trace), as
// test/browser is: meshroot does not depend on it.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
)

func main() {
	bucket := flag.Duration("bucket", 100e6, "the length of each row")
	before := flag.Duration("before", 1e9, "how much of the trace before the change's start to show")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: tracestat [-bucket D] [-before D] TRACE (a bench-fleet -trace-slow file)")
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	s, err := summarise(f, *bucket, *before)
	if err != nil {
		log.Fatalf("%s: %v", flag.Arg(0), err)
	}
	s.print(os.Stdout)
}

// print writes s as bench-fleet's marks, then a row per bucket.
func (s *summary) print(w io.Writer) {
	fmt.Fprintf(w, "trace: %.3f s\n", s.length.Seconds())
	for _, m := range s.marks {
		fmt.Fprintf(w, "mark at %+.3f s from the change's start: %s\n", m.at.Seconds(), m.msg)
	}
	fmt.Fprintf(w, "%10s %8s %10s %8s %8s\n", "t (s)", "Ps busy", "runnable", "GC mark", "STW")
	for _, b := range s.buckets {
		fmt.Fprintf(w, "%+10.2f %8.2f %10.1f %7.0f%% %7.0f%%\n", b.start.Seconds(), b.busy, b.runnable, 100*b.mark, 100*b.stw)
	}
}
