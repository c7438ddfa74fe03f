package agent

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// watch follows WatchTrustBundle, reconnecting with backoff, and signals
// changed on every new bundle. A reconnect may land on another replica
// (round robin over the servers that answer); it says which sequence the
// agent holds, and a replica that has not seen that one yet catches up
// from the store before it answers, so the agent never steps back.
func (a *Agent) watch(ctx context.Context, changed chan<- struct{}) {
	b := a.newBackoff()
	for ctx.Err() == nil {
		req := &meshrootv1.WatchTrustBundleRequest{Cluster: a.cfg.Cluster, HaveSequence: a.latestBundle().GetSequence(), CrlDeltas: true}
		sctx, cancel := context.WithCancel(ctx)
		stream, err := a.client.issuer.WatchTrustBundle(sctx, req)
		if err == nil {
			// The first message of every stream triggers a reconcile (and
			// so a status report): the server may have restarted without
			// hearing what this cluster applied.
			first := true
			crls := crlStream{crls: &a.crls, certs: &a.certs} // the whole CRL set this stream delivered
			for {
				msg, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				set, rerr := crls.apply(msg.GetCrls())
				if rerr != nil {
					err = rerr
					break
				}
				msg.Crls = set
				b.reset()
				a.cfg.Metrics.watching()
				a.mu.Lock()
				// Any difference counts: federated bundles and the active
				// root change without the sequence.
				newer := a.bundle == nil || !proto.Equal(msg, a.bundle)
				a.bundle = msg
				a.mu.Unlock()
				if newer || first {
					first = false
					a.log.Info("trust bundle received", "sequence", msg.GetSequence(), "roots", len(msg.GetRoots()))
					select {
					case changed <- struct{}{}:
					default:
					}
				}
			}
		}
		cancel() // ends a stream left for a bad message
		if ctx.Err() != nil {
			return
		}
		a.cfg.Metrics.watchLost()
		wait := b.next()
		a.log.Warn("trust bundle watch interrupted; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// latestBundle returns the newest bundle heard over the watch, if any.
func (a *Agent) latestBundle() *meshrootv1.TrustBundle {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bundle
}
