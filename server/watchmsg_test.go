package server

import (
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/meshroot/meshroot/ca"
)

// TestWatchMessagesEncodeOnce: the streams that need the same message of
// the current version share one encoding, made once even when they ask
// together; other keys get their own; a version that is not the hub's
// current one is encoded per stream and not kept; past the bound, a new
// key is encoded per stream too.
func TestWatchMessagesEncodeOnce(t *testing.T) {
	cur := uint64(1)
	w := &watchMessages{current: func() uint64 { return cur }}
	var encodes atomic.Int32
	enc := func() (*grpc.PreparedMsg, error) { encodes.Add(1); return &grpc.PreparedMsg{}, nil }

	var wg sync.WaitGroup
	got := make([]*grpc.PreparedMsg, 64)
	for i := range got {
		wg.Go(func() {
			pm, err := w.get(cur, watchKey{form: formDelta, from: 7}, enc)
			if err != nil {
				t.Error(err)
			}
			got[i] = pm
		})
	}
	wg.Wait()
	if n := encodes.Load(); n != 1 {
		t.Fatalf("64 streams asking for one message encoded it %d times, want 1", n)
	}
	for _, pm := range got {
		if pm != got[0] {
			t.Fatal("streams got different encodings of one message")
		}
	}
	for _, k := range []watchKey{{form: formFirst}, {form: formWholeSet}, {form: formDelta, from: 8}} {
		if pm, _ := w.get(cur, k, enc); pm == got[0] {
			t.Errorf("key %+v got the encoding of another key", k)
		}
	}
	if n := encodes.Load(); n != 4 {
		t.Fatalf("%d encodings for 4 keys", n)
	}

	old := uint64(0) // bundles not from the hub
	w.get(old, watchKey{form: formFirst}, enc)
	w.get(old, watchKey{form: formFirst}, enc)
	if n := encodes.Load(); n != 6 {
		t.Fatalf("bundles not from the hub: %d encodings in all, want 6 (not kept)", n)
	}
	old = 7 // a state that is not the current one
	w.get(old, watchKey{form: formFirst}, enc)
	w.get(old, watchKey{form: formFirst}, enc)
	if n := encodes.Load(); n != 8 {
		t.Fatalf("a state that is not the current one: %d encodings in all, want 8 (not kept)", n)
	}
	if pm, _ := w.get(cur, watchKey{form: formDelta, from: 7}, enc); pm != got[0] || encodes.Load() != 8 {
		t.Fatal("a stream on an older version evicted the current version's encodings")
	}

	// A change: the new state replaces the old one's encodings.
	cur = 3
	w.get(cur, watchKey{form: formDelta, from: 7}, enc)
	if n := encodes.Load(); n != 9 {
		t.Fatalf("after a change, the message was not encoded anew: %d", n)
	}

	for i := range maxWatchMessages + 3 {
		w.get(cur, watchKey{form: formDelta, from: uint64(100 + i)}, enc)
	}
	if len(w.byKey) > maxWatchMessages {
		t.Fatalf("%d encodings kept, bound %d", len(w.byKey), maxWatchMessages)
	}
}

// TestWatchKeys: streams share a message only when they would build the
// same one: the same form, and for deltas the same previous snapshot.
func TestWatchKeys(t *testing.T) {
	var none *crlStream
	s1 := newCRLSnapshot(ca.CRLSet{CRLs: [][]byte{{1}}}, nil)
	s2 := newCRLSnapshot(ca.CRLSet{CRLs: [][]byte{{2}}}, s1)
	keys := map[watchKey]string{}
	for name, s := range map[string]*crlStream{"no deltas": none, "first": {}, "after s1": {last: s1}, "after s2": {last: s2}} {
		k := s.key()
		if other, dup := keys[k]; dup {
			t.Errorf("streams %q and %q share the key %+v but need different messages", name, other, k)
		}
		keys[k] = name
	}
	if a, b := (&crlStream{last: s1}).key(), (&crlStream{last: s1}).key(); a != b {
		t.Errorf("two streams after the same snapshot have keys %+v and %+v", a, b)
	}
}

// TestWatchMessagesNoCompressor guards watchMessages' premise: one
// encoding serves every stream only while no stream can ask for a
// compressed one. Linking a compressor (e.g. importing
// google.golang.org/grpc/encoding/gzip) makes the server answer a
// client's grpc-encoding, and the shared encodings must then be kept per
// compressor.
func TestWatchMessagesNoCompressor(t *testing.T) {
	for _, name := range []string{"gzip", "snappy", "zstd", "deflate"} {
		if encoding.GetCompressor(name) != nil {
			t.Errorf("a %s compressor is registered: key watchMessages by the stream's compressor", name)
		}
	}
}
