package agent

import (
	"context"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// Refresh intervals of the trust bundle poll.
const (
	// defaultRefresh applies while the server sent no refresh hint.
	defaultRefresh = 5 * time.Minute
	// minRefresh bounds how often a (misconfigured) hint makes the agent ask.
	minRefresh = time.Second
	// noBundleRefresh applies while the agent holds no bundle at all (the
	// watch has not delivered one yet, and it knows no hint).
	noBundleRefresh = 5 * time.Second
)

// pollBundle re-fetches the trust bundle at the server's refresh hint and
// signals changed when it differs from the one the agent holds. The watch
// delivers changes at once; this catches those a watch stream missed
// without failing (a proxy or NAT that holds the stream open while dropping
// what flows on it, a server that did not push).
func (a *Agent) pollBundle(ctx context.Context, changed chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.refreshInterval()):
		}
		b, err := a.client.issuer.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{Cluster: a.cfg.Cluster})
		if err != nil {
			a.log.Debug("trust bundle poll failed; the watch or the next poll will catch up", "error", status.Convert(err).Message())
			continue
		}
		if a.takeBundle(b) {
			a.log.Info("trust bundle changed (found by polling)", "sequence", b.GetSequence(), "roots", len(b.GetRoots()))
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}
}

// takeBundle keeps b when it differs from the bundle held and is not older
// (a poll can race a push); it reports whether it kept it.
func (a *Agent) takeBundle(b *meshrootv1.TrustBundle) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bundle != nil && (b.GetSequence() < a.bundle.GetSequence() || proto.Equal(b, a.bundle)) {
		return false
	}
	a.bundle = b
	return true
}

// refreshInterval is the latest bundle's refresh hint, within bounds.
func (a *Agent) refreshInterval() time.Duration {
	d := defaultRefresh
	b := a.latestBundle()
	if b == nil {
		return noBundleRefresh
	}
	if b.GetRefreshHintSeconds() > 0 {
		d = time.Duration(min(b.GetRefreshHintSeconds(), int64(StatusReportInterval/time.Second))) * time.Second
	}
	return min(max(d, minRefresh), StatusReportInterval)
}
