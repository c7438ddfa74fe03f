package ca

import (
	"context"
	"time"

	"github.com/meshroot/meshroot/store"
)

// LeaderStale is how old a leader's heartbeat may be before status shows
// it as a leader that stopped answering (its lock is then about to be, or
// already was, taken over).
const LeaderStale = 10 * time.Second

// ReplicaStatus is a server sharing the store, for `root status`.
type ReplicaStatus struct {
	ID        string    `json:"id"`
	Leader    bool      `json:"leader"`
	StartedAt time.Time `json:"started_at"`
	// HeartbeatAge is the time since its last heartbeat, on the
	// database's clock.
	HeartbeatAge time.Duration `json:"heartbeat_age"`
}

// replicas lists the servers sharing the store, when it elects a leader
// among several (nil otherwise: one server, which leads).
func (s *Service) replicas(ctx context.Context) ([]ReplicaStatus, error) {
	el, ok := store.ElectorOf(s.store)
	if !ok {
		return nil, nil
	}
	reps, err := el.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ReplicaStatus, len(reps))
	for i, r := range reps {
		out[i] = ReplicaStatus{ID: r.ID, Leader: r.Leader, StartedAt: r.StartedAt, HeartbeatAge: r.Now.Sub(r.Heartbeat)}
	}
	return out, nil
}
