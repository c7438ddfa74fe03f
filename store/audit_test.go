package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var testTime = time.Date(2031, time.March, 4, 5, 6, 7, 123456789, time.UTC)

func testEntry() AuditEntry {
	return AuditEntry{
		Seq: 1, Time: testTime, Actor: "cli:uid=1000", Action: "root.init",
		Target: "r1", Result: "ok", Details: `{"trust_domain":"example.org"}`,
	}
}

func TestChainHashIsDeterministicHex(t *testing.T) {
	h := ChainHash("", testEntry())
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("ChainHash = %q, want 64 lower-case hex digits", h)
	}
	if h2 := ChainHash("", testEntry()); h2 != h {
		t.Errorf("ChainHash not deterministic: %s then %s", h, h2)
	}
}

func TestChainHashCoversEveryField(t *testing.T) {
	base := ChainHash("prev", testEntry())
	for name, change := range map[string]func(e *AuditEntry){
		"Seq":     func(e *AuditEntry) { e.Seq = 2 },
		"Time":    func(e *AuditEntry) { e.Time = e.Time.Add(time.Nanosecond) },
		"Actor":   func(e *AuditEntry) { e.Actor = "cli:uid=0" },
		"Action":  func(e *AuditEntry) { e.Action = "root.rotate" },
		"Target":  func(e *AuditEntry) { e.Target = "r2" },
		"Result":  func(e *AuditEntry) { e.Result = "denied" },
		"Details": func(e *AuditEntry) { e.Details = `{}` },
	} {
		e := testEntry()
		change(&e)
		if ChainHash("prev", e) == base {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
	if ChainHash("other", testEntry()) == base {
		t.Error("changing prevHash does not change the hash")
	}
}

func TestChainHashIgnoresStoredHashesAndZone(t *testing.T) {
	e := testEntry()
	base := ChainHash("prev", e)
	e.PrevHash, e.Hash = "ignored", "ignored"
	if ChainHash("prev", e) != base {
		t.Error("ChainHash depends on e.PrevHash or e.Hash")
	}
	e.Time = e.Time.In(time.FixedZone("UTC+2", 2*3600))
	if ChainHash("prev", e) != base {
		t.Error("ChainHash depends on the time zone of the same instant")
	}
}

func TestChainHashFieldBoundaries(t *testing.T) {
	a, b := testEntry(), testEntry()
	a.Actor, a.Action = "ab", "c"
	b.Actor, b.Action = "a", "bc"
	if ChainHash("", a) == ChainHash("", b) {
		t.Error(`Actor "ab" + Action "c" and Actor "a" + Action "bc" hash the same`)
	}
	// The boundary between prevHash and the first string field.
	c, d := testEntry(), testEntry()
	c.Details, d.Details = "x", ""
	d.Result = c.Result + "x"
	if ChainHash("", c) == ChainHash("", d) {
		t.Error("moving a byte from Details to Result does not change the hash")
	}
}

// chain builds a valid chain of n entries.
func chain(n int) []AuditEntry {
	var (
		out  []AuditEntry
		prev string
	)
	for i := range n {
		e := testEntry()
		e.Seq = int64(i + 1)
		e.Time = testTime.Add(time.Duration(i) * time.Second)
		e.PrevHash = prev
		e.Hash = ChainHash(prev, e)
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func headOf(entries []AuditEntry) *AuditHead {
	if len(entries) == 0 {
		return &AuditHead{}
	}
	last := entries[len(entries)-1]
	return &AuditHead{Seq: last.Seq, Hash: last.Hash}
}

func TestVerifyChainAcceptsValidChains(t *testing.T) {
	for _, n := range []int{0, 1, 10} {
		entries := chain(n)
		if err := VerifyChain(entries, nil); err != nil {
			t.Errorf("%d entries, no head: %v", n, err)
		}
		if err := VerifyChain(entries, headOf(entries)); err != nil {
			t.Errorf("%d entries with head: %v", n, err)
		}
	}
}

func TestVerifyChainErrors(t *testing.T) {
	full := chain(10)
	for _, tc := range []struct {
		name       string
		entries    func() []AuditEntry
		head       *AuditHead
		wantSeq    int64
		wantReason string
	}{
		{
			name:       "edited row",
			entries:    func() []AuditEntry { c := chain(10); c[6].Details = `{"forged":true}`; return c },
			wantSeq:    7,
			wantReason: "row was edited (hash mismatch)",
		},
		{
			name:       "edited time",
			entries:    func() []AuditEntry { c := chain(10); c[2].Time = c[2].Time.Add(time.Nanosecond); return c },
			wantSeq:    3,
			wantReason: "hash mismatch",
		},
		{
			name: "edited and rehashed row",
			entries: func() []AuditEntry {
				c := chain(10)
				c[2].Actor = "someone-else"
				c[2].Hash = ChainHash(c[2].PrevHash, c[2])
				return c
			},
			wantSeq:    4,
			wantReason: "previous hash does not match the hash of seq 3",
		},
		{
			name:       "missing middle rows",
			entries:    func() []AuditEntry { c := chain(10); return append(c[:4:4], c[8:]...) },
			wantSeq:    5,
			wantReason: "row(s) missing before seq 9",
		},
		{
			name:       "missing first rows",
			entries:    func() []AuditEntry { return chain(10)[2:] },
			wantSeq:    1,
			wantReason: "row(s) missing before seq 3",
		},
		{
			name: "first row has a previous hash",
			entries: func() []AuditEntry {
				c := chain(1)
				c[0].PrevHash = "abc"
				c[0].Hash = ChainHash("abc", c[0])
				return c
			},
			wantSeq:    1,
			wantReason: "first row has a previous hash",
		},
		{
			name:       "duplicated row",
			entries:    func() []AuditEntry { c := chain(3); return append(c, c[2]) },
			wantSeq:    3,
			wantReason: "seq 3 follows seq 3",
		},
		{
			name:       "zero seq",
			entries:    func() []AuditEntry { c := chain(1); c[0].Seq = 0; return c },
			wantSeq:    0,
			wantReason: "sequence numbers start at 1",
		},
		{
			name:       "last rows deleted",
			entries:    func() []AuditEntry { return chain(5) },
			head:       headOf(chain(6)),
			wantSeq:    6,
			wantReason: "log ends at seq 5 but head records seq 6: rows were deleted",
		},
		{
			name:       "all rows deleted",
			entries:    func() []AuditEntry { return nil },
			head:       headOf(chain(2)),
			wantSeq:    1,
			wantReason: "log ends at seq 0 but head records seq 2",
		},
		{
			name:       "rows beyond the head",
			entries:    func() []AuditEntry { return chain(7) },
			head:       headOf(chain(6)),
			wantSeq:    7,
			wantReason: "log ends at seq 7 but head records seq 6",
		},
		{
			name:       "last row replaced",
			entries:    func() []AuditEntry { return chain(6) },
			head:       &AuditHead{Seq: 6, Hash: full[0].Hash},
			wantSeq:    6,
			wantReason: "last row's hash does not match",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyChain(tc.entries(), tc.head)
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("VerifyChain = %v, want a *ChainError", err)
			}
			if ce.Seq != tc.wantSeq || !strings.Contains(ce.Reason, tc.wantReason) {
				t.Errorf("got seq %d %q, want seq %d containing %q", ce.Seq, ce.Reason, tc.wantSeq, tc.wantReason)
			}
			if want := "audit log broken at seq "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q does not start with %q", err, want)
			}
		})
	}
}

func TestChainErrorMessage(t *testing.T) {
	err := error(&ChainError{Seq: 7, Reason: "row was edited (hash mismatch)"})
	if got, want := err.Error(), "audit log broken at seq 7: row was edited (hash mismatch)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
