package agent

import (
	"sync"
	"time"
)

// knownSecret is the cacerts Secret as the agent's last successful
// reconcile left it: as read, or as written (the data the agent sent,
// with the metadata the API server answered: UpdateMeta). A
// reconcile that a trust bundle change or a recheck (of istiod's
// confirmation, a status report to retry) wakes starts from it instead
// of reading the Secret again. At 1,000 clusters the Secret is ~1 MB (the
// fleet's CRLs), and every cluster's agent read it at every change of the
// fleet, and again at istiod's recheck 2 s later: two more transfers and
// decodes of it per change, besides the write.
//
// Nothing is lost by not reading: every write carries the known Secret's
// resourceVersion, so a Secret changed since (by a person, another
// writer) fails the write with a conflict, and the reconcile starts again
// from a read (Agent.reconcile); should that reconcile have been issued a
// new intermediate first (a bundle change that needs one), the one from
// the read asks again, as a write that lost a race with an edit always
// did. A change that needs no write is not
// checked against the cluster until a reconcile reads: the first, a
// renewal, a retry after a failure, and any reconcile once the known
// Secret came from the API (a read, or a write's answer) more than
// StatusReportInterval before. A reconcile that fails forgets the
// Secret, so the next one reads.
type knownSecret struct {
	mu  sync.Mutex
	cur *Current
	at  time.Time // when cur came from the API
}

// take returns the known Secret and when it came from the API, if it
// came less than maxAge before now, and forgets it.
func (k *knownSecret) take(now time.Time, maxAge time.Duration) (*Current, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, at := k.cur, k.at
	k.cur, k.at = nil, time.Time{}
	if cur == nil || !now.Before(at.Add(maxAge)) || now.Before(at) {
		return nil, time.Time{}
	}
	return cur, at
}

// set records cur, which came from the API at at, as the Secret a
// reconcile left.
func (k *knownSecret) set(cur *Current, at time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cur, k.at = cur, at
}
