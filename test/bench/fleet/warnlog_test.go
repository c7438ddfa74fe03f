package main

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestWarnLogKinds: the agents' warnings are counted by level, message
// and the start of their error with numbers blanked, so that the same
// failure of 1,000 clusters is one kind; kept lines are bounded.
func TestWarnLogKinds(t *testing.T) {
	w := &warnLog{}
	log := slog.New(w)
	for _, c := range []string{"c0001", "c0002", "c0003"} {
		log.With("cluster", c).Warn("status report failed; will retry", "error", errors.New("CRL number 17961291"+c[1:]+" of cluster "+c+" is not above the last one kept"))
	}
	log.Error("ca-crl.pem is incomplete", "missing", strings.Repeat("CN=c0606 (serial b0cf1df9); ", 100))
	log.Info("not counted")

	n, first := w.snapshot()
	if n != 4 {
		t.Fatalf("%d warnings counted, want 4", n)
	}
	kinds := w.topKinds(8)
	want := []string{
		"     3  WARN status report failed; will retry: CRL number ############ of cluster c#### is not above the last one kept",
		"     1  ERROR ca-crl.pem is incomplete",
	}
	if strings.Join(kinds, "\n") != strings.Join(want, "\n") {
		t.Errorf("kinds:\n%s\nwant:\n%s", strings.Join(kinds, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range first {
		if len(l) > maxWarnLine+3 {
			t.Errorf("a kept line of %d bytes, over %d", len(l), maxWarnLine)
		}
	}
}

// TestWarnLogForwarded: an agent shard's warnings reach the bench's
// warnLog counted and kept as they would be in one process (the shard
// forwards kind and line; the bench adds them).
func TestWarnLogForwarded(t *testing.T) {
	bench := &warnLog{}
	shard := &warnLog{fwd: bench.add}
	local := &warnLog{}
	for _, w := range []*warnLog{shard, local} {
		log := slog.New(w)
		for i, c := range []string{"c0001", "c0002", "c0003", "c0004", "c0005", "c0006"} {
			log.With("cluster", c).Warn("status report failed; will retry", "error", errors.New("attempt "+c[1:]), "n", i)
		}
		log.Error("ca-crl.pem is incomplete", "missing", strings.Repeat("x", 2*maxWarnLine))
		log.Info("not counted")
	}
	if n, _ := shard.snapshot(); n != 0 {
		t.Errorf("the shard counted %d warnings itself, want 0 (it forwards them)", n)
	}
	nb, fb := bench.snapshot()
	nl, fl := local.snapshot()
	if nb != 7 || nb != nl {
		t.Errorf("forwarded: %d warnings counted, in one process %d; want 7 each", nb, nl)
	}
	if strings.Join(fb, "\n") != strings.Join(fl, "\n") || len(fb) != 5 {
		t.Errorf("kept lines differ or are not 5:\nforwarded:\n%s\nlocal:\n%s", strings.Join(fb, "\n"), strings.Join(fl, "\n"))
	}
	if kb, kl := bench.topKinds(8), local.topKinds(8); strings.Join(kb, "\n") != strings.Join(kl, "\n") {
		t.Errorf("kinds differ:\nforwarded:\n%s\nlocal:\n%s", strings.Join(kb, "\n"), strings.Join(kl, "\n"))
	}
}
