package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshroot/meshroot/store"
)

// Leadership runs the work only one server may do at a time (federation
// watchers, CRL re-signing, housekeeping) on the elected leader of the
// servers sharing a store, and tells /readyz and the metrics which role
// this server has. Without an elector (SQLite: one server) the server
// always leads.
type Leadership struct {
	replica string
	elector store.Elector // nil: always the leader
	log     *slog.Logger
	leader  atomic.Bool

	gauge   prometheus.Gauge
	changes prometheus.Counter
}

// NewLeadership returns the leadership of the server named replica,
// elected through el (nil: always the leader), with its metrics
// registered in reg: meshroot_leader and meshroot_leader_changes_total.
func NewLeadership(replica string, el store.Elector, reg prometheus.Registerer, log *slog.Logger) (*Leadership, error) {
	if log == nil {
		log = slog.Default()
	}
	l := &Leadership{
		replica: replica, elector: el, log: log,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "meshroot", Name: "leader",
			Help: "1 while this server is the leader of the servers sharing its store (runs federation watchers, CRL re-signing, housekeeping), 0 while it follows."}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "meshroot", Name: "leader_changes_total",
			Help: "Times this server became leader or stopped being it."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{l.gauge, l.changes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// Replica is the name this server has among the replicas.
func (l *Leadership) Replica() string { return l.replica }

// IsLeader reports whether this server leads now. A nil Leadership
// always leads.
func (l *Leadership) IsLeader() bool {
	return l == nil || l.leader.Load()
}

// Role is "leader" or "follower".
func (l *Leadership) Role() string {
	if l.IsLeader() {
		return "leader"
	}
	return "follower"
}

func (l *Leadership) set(leader bool) {
	if l.leader.Swap(leader) != leader {
		l.changes.Inc()
	}
	if leader {
		l.gauge.Set(1)
	} else {
		l.gauge.Set(0)
	}
}

// campaignRetry is the wait after a failed campaign before the next;
// rejoinDelay the wait after losing leadership before campaigning again.
var (
	campaignRetry = 2 * time.Second
	rejoinDelay   = 3 * time.Second
)

// Run runs work while this server leads, until ctx ends: it campaigns,
// then runs every work function with a context that ends as soon as
// leadership is lost, waits for them all to return, gives leadership up,
// and campaigns again. Without an elector it leads until ctx ends.
func (l *Leadership) Run(ctx context.Context, work ...func(context.Context)) {
	if l.elector == nil {
		l.set(true)
		runAll(ctx, work)
		return
	}
	for ctx.Err() == nil {
		lease, err := l.elector.Campaign(ctx, l.replica)
		if err != nil {
			if ctx.Err() == nil {
				l.log.Error("leader election failed; trying again", "replica", l.replica, "error", err, "retry_in", campaignRetry)
				select {
				case <-ctx.Done():
				case <-time.After(campaignRetry):
				}
			}
			continue
		}
		l.log.Info("this server is now the leader: it runs federation watchers, CRL re-signing and housekeeping", "replica", l.replica)
		wctx, cancel := context.WithCancel(ctx)
		l.set(true)
		stopped := make(chan struct{})
		go func() {
			select {
			case <-lease.Lost():
			case <-wctx.Done(): // ctx ended, or every work returned
			}
			// Stop being the leader before the work has stopped: from
			// here on nothing new may start as the leader.
			l.set(false)
			cancel()
			close(stopped)
		}()
		runAll(wctx, work)
		cancel()
		<-stopped
		lost := lease.Err() // before Release, which ends it too
		lease.Release()
		if err := lost; err != nil && ctx.Err() == nil {
			// Let a replica whose session is healthy take over rather
			// than campaign again at once from a session that just failed.
			l.log.Warn("this server lost leadership; its singleton work stopped", "replica", l.replica, "reason", err, "campaigns_again_in", rejoinDelay)
			select {
			case <-ctx.Done():
			case <-time.After(rejoinDelay):
			}
		}
	}
	l.set(false)
}

// runAll runs each of work in its own goroutine and waits for all.
func runAll(ctx context.Context, work []func(context.Context)) {
	var wg sync.WaitGroup
	for _, w := range work {
		wg.Go(func() { w(ctx) })
	}
	wg.Wait()
}
