package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"time"
)

// chainHashDomain separates audit chain hashes from any other SHA-256 use and
// versions the encoding: changing the encoding means changing this string.
const chainHashDomain = "meshroot/audit-chain/v1"

// ChainHash returns the hex encoded SHA-256 that links e to the row before it,
// whose hash is prevHash ("" for the first row).
//
// The hash covers prevHash, e.Seq, e.Time (in UTC, formatted RFC 3339 with
// nanoseconds), e.Actor, e.Action, e.Target, e.Result and e.Details. Every
// string is length-prefixed, so moving bytes from one field to the next
// changes the hash. e.PrevHash and e.Hash are ignored: the previous hash is
// the prevHash argument.
func ChainHash(prevHash string, e AuditEntry) string {
	h := sha256.New()
	writeField(h, chainHashDomain)
	writeField(h, prevHash)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], uint64(e.Seq))
	h.Write(seq[:])
	writeField(h, e.Time.UTC().Format(time.RFC3339Nano))
	writeField(h, e.Actor)
	writeField(h, e.Action)
	writeField(h, e.Target)
	writeField(h, e.Result)
	writeField(h, e.Details)
	return hex.EncodeToString(h.Sum(nil))
}

// writeField writes s to h preceded by its length as a big-endian uint64.
func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// AuditHead is the sequence number and hash of the last audit row, as the
// store records it apart from the rows themselves. Comparing it with the last
// row detects rows deleted from the end of the log, which the chain alone
// cannot show.
type AuditHead struct {
	// Seq is the sequence number of the last row (0 when the log is empty).
	Seq int64
	// Hash is the Hash of the last row ("" when the log is empty).
	Hash string
}

// ChainError reports where and how an audit chain is broken. VerifyChain
// returns it; use errors.As to get at Seq.
type ChainError struct {
	// Seq is the first sequence number at which the chain is wrong. When
	// rows are missing it is the first missing sequence number.
	Seq int64
	// Reason says what is wrong at Seq.
	Reason string
}

// Error implements error.
func (e *ChainError) Error() string {
	return fmt.Sprintf("audit log broken at seq %d: %s", e.Seq, e.Reason)
}

// VerifyChain checks that entries are a complete, unmodified audit log in
// Seq order: sequence numbers start at 1 and have no gaps, each row's
// PrevHash is the Hash of the row before it ("" for the first row), and each
// row's Hash equals ChainHash of its contents.
//
// When head is not nil, the last entry must also be the row head records
// (an empty log matches a head with Seq 0), which detects rows deleted from,
// or appended to, the end of the log.
//
// VerifyChain returns nil when the chain is intact and a *ChainError naming
// the first bad sequence number otherwise. A broken chain means the audit
// database was modified outside meshroot: keep a copy of the database for
// investigation before doing anything else with it. To check a log too
// large to hold in memory, feed its rows to a ChainVerifier.
func VerifyChain(entries []AuditEntry, head *AuditHead) error {
	var v ChainVerifier
	for _, e := range entries {
		if err := v.Add(e); err != nil {
			return err
		}
	}
	return v.Finish(head)
}

// ChainVerifier checks an audit log one row at a time, in Seq order, keeping
// only the last row's seq and hash: the checks of VerifyChain in constant
// memory. The zero value is ready to use.
type ChainVerifier struct {
	prevSeq  int64
	prevHash string
}

// Add checks e as the next row of the log, returning a *ChainError when the
// chain breaks at it.
func (v *ChainVerifier) Add(e AuditEntry) error {
	switch {
	case e.Seq < 1:
		return &ChainError{Seq: e.Seq, Reason: "invalid sequence number: sequence numbers start at 1"}
	case e.Seq > v.prevSeq+1:
		return &ChainError{Seq: v.prevSeq + 1, Reason: fmt.Sprintf("row(s) missing before seq %d: rows were deleted", e.Seq)}
	case e.Seq <= v.prevSeq:
		return &ChainError{Seq: e.Seq, Reason: fmt.Sprintf("seq %d follows seq %d: rows are duplicated or out of order", e.Seq, v.prevSeq)}
	}
	if got := ChainHash(e.PrevHash, e); got != e.Hash {
		return &ChainError{Seq: e.Seq, Reason: "row was edited (hash mismatch)"}
	}
	if e.PrevHash != v.prevHash {
		if v.prevSeq == 0 {
			return &ChainError{Seq: e.Seq, Reason: "first row has a previous hash: the log was truncated or rewritten"}
		}
		return &ChainError{Seq: e.Seq, Reason: fmt.Sprintf("previous hash does not match the hash of seq %d: rows were edited, replaced or reordered", v.prevSeq)}
	}
	v.prevSeq, v.prevHash = e.Seq, e.Hash
	return nil
}

// Rows is how many rows were added and found intact.
func (v *ChainVerifier) Rows() int64 { return v.prevSeq }

// Finish checks the end of the log: when head is not nil, the last row added
// must be the row head records (see VerifyChain).
func (v *ChainVerifier) Finish(head *AuditHead) error {
	if head == nil {
		return nil
	}
	switch {
	case v.prevSeq < head.Seq:
		return &ChainError{Seq: v.prevSeq + 1, Reason: fmt.Sprintf("log ends at seq %d but head records seq %d: rows were deleted", v.prevSeq, head.Seq)}
	case v.prevSeq > head.Seq:
		return &ChainError{Seq: head.Seq + 1, Reason: fmt.Sprintf("log ends at seq %d but head records seq %d: rows were added outside meshroot or the head was moved back", v.prevSeq, head.Seq)}
	case v.prevHash != head.Hash:
		return &ChainError{Seq: v.prevSeq, Reason: "last row's hash does not match the hash the head records: the row was replaced"}
	}
	return nil
}

// VerifyAuditLog checks st's audit log and returns how many rows it holds;
// a broken chain is a *ChainError. It fails when st cannot verify its log.
func VerifyAuditLog(ctx context.Context, st Store) (int64, error) {
	if st.AuditVerifier == nil {
		return 0, errors.New("this store cannot verify its audit log in constant memory: use the SQLite store")
	}
	return st.VerifyAuditRows(ctx)
}
