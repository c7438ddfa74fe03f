package server

import (
	"sync"

	"google.golang.org/grpc"
)

// watchMessages holds the encoded messages of the hub's latest version
// that watch streams send, each encoded once and sent by every stream that
// needs it. A stream's message depends only on the version and on what the
// stream sent before (nothing: the whole CRL set; a previous CRL snapshot:
// the delta from it), so at a change the ~1,000 streams of a fleet share
// one or two encodings instead of marshalling 1,000 copies; and after a
// restart every reconnecting agent gets the one encoding of the whole set
// (about 1 KiB per cluster) rather than its own copy in a pooled buffer,
// which was most of the server's memory per watcher at 1,000 clusters.
//
// The encodings are grpc.PreparedMsg, which hold their bytes in a plain
// slice that sending does not free or change. They are only valid while
// every stream encodes alike: the server registers no compressor
// (TestWatchMessagesNoCompressor fails if one is linked).
type watchMessages struct {
	// current is the hub's current generation (Bundles.Gen): only its
	// messages are kept.
	current func() uint64

	mu    sync.Mutex
	gen   uint64
	byKey map[watchKey]*encodedMsg
}

// watchKey names one message of a version: the CRL form and, for deltas,
// the snapshot the stream had.
type watchKey struct {
	form watchForm
	from uint64
}

// key is the message key of the stream's next message (s nil: a stream
// not taking deltas).
func (s *crlStream) key() watchKey {
	switch {
	case s == nil:
		return watchKey{form: formWholeSet}
	case s.last == nil:
		return watchKey{form: formFirst}
	default:
		return watchKey{form: formDelta, from: s.last.id}
	}
}

// watchForm is how a message carries the CRL set.
type watchForm uint8

const (
	formWholeSet watchForm = iota // whole set, for streams not taking deltas
	formFirst                     // whole set, as the first message of a delta stream
	formDelta                     // what changed since the snapshot `from`
)

// maxWatchMessages bounds the encodings kept per version (deltas from a
// few older snapshots, as CRLSnapshot keeps them).
const maxWatchMessages = maxDeltasKept + 2

type encodedMsg struct {
	once sync.Once
	pm   *grpc.PreparedMsg
	err  error
}

// get returns the encoding of key for the hub's state gen, calling encode
// once for all the streams that ask for it together. Messages of another
// state than the hub's current one (a stream that read the hub just
// before a change) are encoded for that stream alone. States are told
// apart by generation, not by Version: a root prepared and rolled back
// returns to an earlier Version with a higher bundle sequence.
func (w *watchMessages) get(gen uint64, key watchKey, encode func() (*grpc.PreparedMsg, error)) (*grpc.PreparedMsg, error) {
	w.mu.Lock()
	if w.gen != gen || w.byKey == nil {
		if gen == 0 || gen != w.current() {
			w.mu.Unlock()
			return encode()
		}
		w.gen, w.byKey = gen, map[watchKey]*encodedMsg{}
	}
	e, ok := w.byKey[key]
	if !ok {
		if len(w.byKey) >= maxWatchMessages {
			w.mu.Unlock()
			return encode()
		}
		e = &encodedMsg{}
		w.byKey[key] = e
	}
	w.mu.Unlock()
	e.once.Do(func() { e.pm, e.err = encode() })
	return e.pm, e.err
}
