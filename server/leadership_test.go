package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshroot/meshroot/store"
)

// fakeElector grants leadership at once, as often as asked, and lets the
// test end each lease. The real election runs against PostgreSQL in
// store/postgres and cmd/meshroot; this one tests Run's ordering.
type fakeElector struct {
	leases chan *fakeLease
}

type fakeLease struct {
	lost     chan struct{}
	once     sync.Once
	released chan struct{}
	err      error
}

func (e *fakeElector) Campaign(ctx context.Context, _ string) (store.Lease, error) {
	l := &fakeLease{lost: make(chan struct{}), released: make(chan struct{})}
	select {
	case e.leases <- l:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *fakeElector) Replicas(context.Context) ([]store.Replica, error) { return nil, nil }

func (l *fakeLease) Lost() <-chan struct{} { return l.lost }
func (l *fakeLease) Err() error {
	select {
	case <-l.lost:
		return l.err
	default:
		return nil
	}
}
func (l *fakeLease) Release() { l.once.Do(func() { close(l.released) }) }

func (l *fakeLease) lose() {
	l.err = errors.New("heartbeat failed")
	close(l.lost)
}

// When the lease is lost, the server stops being leader and the work's
// context ends before the lease is released (the lock given up); after a
// wait it campaigns and leads again.
func TestLeadershipRunStopsWorkBeforeRelease(t *testing.T) {
	defer func(old time.Duration) { rejoinDelay = old }(rejoinDelay)
	rejoinDelay = 50 * time.Millisecond
	el := &fakeElector{leases: make(chan *fakeLease)}
	reg := prometheus.NewRegistry()
	l, err := NewLeadership("r1", el, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 2)
	type stop struct {
		leader   bool
		released bool
	}
	stops := make(chan stop, 2)
	var cur *fakeLease
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		l.Run(ctx, func(ctx context.Context) {
			started <- struct{}{}
			<-ctx.Done()
			mu.Lock()
			lease := cur
			mu.Unlock()
			released := false
			select {
			case <-lease.released:
				released = true
			default:
			}
			stops <- stop{l.IsLeader(), released}
		})
		close(done)
	}()
	lease := <-el.leases
	mu.Lock()
	cur = lease
	mu.Unlock()
	<-started
	if !l.IsLeader() || testutil.ToFloat64(l.gauge) != 1 {
		t.Fatal("not leader while the work runs")
	}
	lease.lose()
	if s := <-stops; s.leader || s.released {
		t.Errorf("when the work stopped: leader %v, lease released %v; want neither", s.leader, s.released)
	}
	select {
	case <-lease.released:
	case <-time.After(5 * time.Second):
		t.Fatal("the lost lease was never released")
	}
	second := <-el.leases
	mu.Lock()
	cur = second
	mu.Unlock()
	<-started
	if got := testutil.ToFloat64(l.changes); got != 3 {
		t.Errorf("leader changes = %v, want 3 (led, lost, led)", got)
	}
	cancel()
	<-done
	if l.IsLeader() || testutil.ToFloat64(l.gauge) != 0 {
		t.Error("still leader after Run returned")
	}
	select {
	case <-second.released:
	default:
		t.Error("the lease was not released when Run returned")
	}
}

// Without an elector (SQLite: one server) the server leads at once.
func TestLeadershipWithoutElectorLeads(t *testing.T) {
	l, err := NewLeadership("solo", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan bool, 1)
	go l.Run(ctx, func(ctx context.Context) { ran <- l.IsLeader(); <-ctx.Done() })
	if !<-ran {
		t.Error("a server without an elector is not the leader")
	}
	if l.Role() != "leader" {
		t.Errorf("role %q", l.Role())
	}
	cancel()
	var nilL *Leadership
	if !nilL.IsLeader() || nilL.Role() != "leader" {
		t.Error("a nil Leadership (no HA) does not lead")
	}
}
