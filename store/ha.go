package store

import (
	"context"
	"time"
)

// Optional capabilities. A store shared by several servers (PostgreSQL)
// offers more than the interfaces every store implements: it tells the
// servers of each other's changes, and elects one of them to run the work
// only one may run. A consumer asks for a capability with ChangeFeedOf or
// ElectorOf and falls back to the single-process behaviour when the store
// lacks it (SQLite: one server, which polls and always leads).

// ChangeFeed tells a process of changes committed by any process sharing
// the store.
type ChangeFeed interface {
	// Changes returns a channel that receives a value soon after a
	// transaction that changed the trust bundle, a root's state, a
	// federated bundle, a CRL, a revocation or an intermediate commits,
	// wherever it ran; several changes may arrive as one value. It also
	// receives one after the feed reconnected, because changes committed
	// while it was down were not delivered. The feed is best effort: a
	// consumer still polls, more slowly. The channel is closed when ctx
	// ends.
	Changes(ctx context.Context) <-chan struct{}
}

// Elector elects one leader among the processes sharing the store.
type Elector interface {
	// Campaign blocks until this process, named replica, leads or ctx
	// ends. The returned Lease's Lost channel is closed when leadership
	// ends: the process must stop the leader's work at once. Leadership
	// ends before another process can be elected (see the
	// implementation's documentation for the bound).
	Campaign(ctx context.Context, replica string) (Lease, error)
	// Replicas lists the processes that campaigned recently, for
	// operators: which one leads and when each was last heard of.
	Replicas(ctx context.Context) ([]Replica, error)
}

// Lease is the leadership won by Campaign.
type Lease interface {
	// Lost is closed when leadership ends (the session with the store
	// failed, or Release was called).
	Lost() <-chan struct{}
	// Err says why leadership ended (nil while it holds).
	Err() error
	// Release gives leadership up.
	Release()
}

// Replica is a process that shares the store, as it last recorded itself.
type Replica struct {
	ID        string
	Leader    bool
	StartedAt time.Time
	// Heartbeat is when the replica last confirmed it is alive (and, if
	// Leader, that it still holds leadership), on the database's clock.
	Heartbeat time.Time
	// Now is the database's clock when the list was read, to age
	// Heartbeat without comparing clocks of different machines.
	Now time.Time
}

// ChangeFeedOf returns s's change feed, when its implementation has one.
func ChangeFeedOf(s Store) (ChangeFeed, bool) {
	f, ok := s.Updater.(ChangeFeed)
	return f, ok
}

// ElectorOf returns s's leader election, when its implementation has one.
func ElectorOf(s Store) (Elector, bool) {
	e, ok := s.Updater.(Elector)
	return e, ok
}
