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
