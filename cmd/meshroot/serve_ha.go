package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store"
)

// What serve adds for several servers sharing one store (docs/ha.md):
// every server serves the Issuer and Admin APIs and follows the changes
// the others commit (store.ChangeFeed); one of them, the leader
// (store.Elector), runs the singleton work. With a store one server uses
// (SQLite), that server leads and polls, as before.

// replicaID is the server's name among the replicas: the configured one,
// else host name and process id (a pod's name in Kubernetes).
func replicaID(configured string) string {
	if configured != "" {
		return configured
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "meshroot"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// newLeadership returns the server's leadership, elected through st when
// it elects (then only the leader re-signs CRLs), and makes hub follow the
// changes of the other servers when st has a change feed, until ctx ends.
func newLeadership(ctx context.Context, cfg serveConfig, st store.Store, svc *ca.Service, hub *server.BundleHub, reg prometheus.Registerer, log *slog.Logger) (*server.Leadership, error) {
	el, elects := store.ElectorOf(st)
	if !elects {
		el = nil
	}
	lead, err := server.NewLeadership(replicaID(cfg.ReplicaID), el, reg, log.With("component", "leader-election"))
	if err != nil {
		return nil, err
	}
	if elects {
		svc.SetCRLSigning(lead.IsLeader)
	}
	if feed, ok := store.ChangeFeedOf(st); ok {
		hub.Follow(feed.Changes(ctx))
	}
	return lead, nil
}

// leaderFederation is the federation watchers as `federation refresh`
// reaches them: running on the leader only.
type leaderFederation struct {
	*federation.Federator
	lead *server.Leadership
}

// Leading implements ca.LeaderOnly.
func (f leaderFederation) Leading() bool { return f.lead.IsLeader() }

// federationUserAgent names this server in its federation fetches.
func federationUserAgent(lead *server.Leadership) string {
	return "meshroot-federation (replica " + lead.Replica() + ")"
}

// runSingletons runs, on the leader only, the federation watchers, the
// CRL re-signing (the hub's refresh on the leader signs what is due; a
// new leader refreshes at once) and the housekeeping, until ctx ends.
func runSingletons(ctx context.Context, lead *server.Leadership, fed *federation.Federator, hub *server.BundleHub, svc *ca.Service, log *slog.Logger) {
	lead.Run(ctx,
		func(ctx context.Context) { _ = fed.Run(ctx) },
		func(ctx context.Context) { hub.Poke(); <-ctx.Done() },
		func(ctx context.Context) {
			housekeeping(ctx, svc, lead.Replica(), log.With("component", "housekeeping"))
		},
	)
}

// Housekeeping: join tokens that expired more than expiredTokensKept ago
// are deleted (and the deletion audited) every housekeepingEvery.
var (
	housekeepingEvery = 10 * time.Minute
	expiredTokensKept = 24 * time.Hour
)

// housekeeping deletes long-expired join tokens until ctx ends.
func housekeeping(ctx context.Context, svc *ca.Service, replica string, log *slog.Logger) {
	ctx = ca.WithActor(ctx, ca.Actor("server:"+replica))
	t := time.NewTicker(housekeepingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := time.Now().Add(-expiredTokensKept)
		n, err := svc.DeleteExpiredJoinTokens(ctx, before)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("housekeeping: deleting expired join tokens failed; trying again later", "error", err)
		case n > 0:
			log.Info("housekeeping: deleted expired join tokens (audited as token.expire)", "count", n, "expired_before", before.UTC().Format(time.RFC3339))
		}
	}
}
