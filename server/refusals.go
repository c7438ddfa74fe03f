package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// unauthenticatedActor is the audit actor of a refused Issuer call.
const unauthenticatedActor = ca.Actor("requester:unauthenticated")

// overflowPeer stands for every peer once maxPeers are being tracked.
const overflowPeer = "*"

// refusals limits and records the refused calls of Issuer callers, who are
// not authenticated when they call:
//
//   - each peer (remote IP address; IPv6 by /64) has an allowance of
//     refusals (a token bucket, Limits.RefusalBurst refilled at
//     RefusalRate); a peer that used it up is refused at once, before any
//     authentication work, until it refills. Successful calls cost nothing,
//     nor do calls that fail on the server's side (callersFault).
//   - the audit log gets the first Limits.RefusalRows refusals of each
//     (peer, action, result, code) in a window one by one, and the rest as
//     one summary row with their count when the window ends; the metric
//     meshroot_refusals_summarised_total counts them as they happen.
//
// Its state is bounded by maxPeers entries each for allowances and counts.
type refusals struct {
	svc *ca.Service
	log *slog.Logger
	lim Limits
	now func() time.Time

	mu          sync.Mutex
	buckets     map[string]*bucket
	windowStart time.Time
	counts      map[refusalKey]int
}

type bucket struct {
	tokens float64
	at     time.Time
}

// refusalKey is what makes refusals "the same" for summarising: one peer,
// one action, result and code, and the target when it is a registered
// cluster (a refusal for a real cluster is a signal of its own; names that
// are not registered, a flood's junk, share one key per peer).
type refusalKey struct{ peer, action, result, code, target string }

func newRefusals(svc *ca.Service, log *slog.Logger, lim Limits) *refusals {
	return &refusals{svc: svc, log: log, lim: lim.withDefaults(), now: time.Now,
		buckets: map[string]*bucket{}, counts: map[refusalKey]int{}}
}

// limitedMethods are the Issuer calls that authenticate, with the audit
// action of a refusal. The trust bundle calls need no credential.
var limitedMethods = map[string]string{
	meshrootv1.Issuer_SignIntermediate_FullMethodName: "intermediate.issue",
	meshrootv1.Issuer_ReportStatus_FullMethodName:     "cluster.report",
}

// unary is the Issuer service's interceptor: it refuses a peer that used up
// its allowance and charges the allowance for each refused call.
func (r *refusals) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	action, ok := limitedMethods[info.FullMethod]
	if !ok || r.lim.RefusalBurst < 0 {
		return handler(ctx, req)
	}
	p := peerKey(ctx)
	if !r.allow(p) {
		rateLimited.Inc()
		refused.WithLabelValues(codes.ResourceExhausted.String()).Inc()
		var target string
		if c, ok := req.(interface{ GetCluster() string }); ok {
			target = c.GetCluster()
		}
		st := status.Errorf(codes.ResourceExhausted, "too many refused requests from %s: wait %s and retry with a valid credential", p, r.refillTime())
		r.record(ctx, p, action, target, "denied", codes.ResourceExhausted, "rate limited: too many refused requests from this peer")
		return nil, st
	}
	resp, err := handler(ctx, req)
	if err != nil && callersFault(err) {
		r.charge(p)
	}
	return resp, err
}

// callersFault says whether a failed call counts against its peer's
// allowance: a refusal of what the caller sent does; a failure of the
// server's own (the database restarting: Unavailable; a call cut short)
// does not. Otherwise an outage would use up the allowance of every agent
// behind one address (a NAT), which would then be refused for a while
// after the outage ends, when they all retry.
func callersFault(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		return false
	}
	return true
}

// refillTime is how long one refusal takes to refill.
func (r *refusals) refillTime() time.Duration {
	return time.Duration(float64(time.Second) / r.lim.RefusalRate).Round(time.Millisecond)
}

// peerKey names the caller for limits and the audit log: its IP address,
// an IPv6 address by its /64.
func peerKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	var ip net.IP
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return "unknown"
		}
		ip = net.ParseIP(host)
	}
	if ip == nil {
		return "unknown"
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// refill brings b up to date; the caller holds r.mu.
func (r *refusals) refill(b *bucket, now time.Time) {
	b.tokens = min(float64(r.lim.RefusalBurst), b.tokens+now.Sub(b.at).Seconds()*r.lim.RefusalRate)
	b.at = now
}

// allow reports whether peer p has a refusal left.
func (r *refusals) allow(p string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[p]
	if !ok {
		if b, ok = r.buckets[overflowPeer]; !ok || len(r.buckets) < maxPeers {
			return true
		}
	}
	r.refill(b, r.now())
	return b.tokens >= 1
}

// charge takes one refusal from peer p's allowance.
func (r *refusals) charge(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	b, ok := r.buckets[p]
	if !ok {
		if len(r.buckets) >= maxPeers {
			// Forget peers whose allowance is full again: they are the
			// same as peers never seen.
			for k, v := range r.buckets {
				if r.refill(v, now); v.tokens >= float64(r.lim.RefusalBurst) {
					delete(r.buckets, k)
				}
			}
		}
		if len(r.buckets) >= maxPeers {
			p = overflowPeer
		}
		if b, ok = r.buckets[p]; !ok {
			b = &bucket{tokens: float64(r.lim.RefusalBurst), at: now}
			r.buckets[p] = b
		}
	}
	r.refill(b, now)
	b.tokens = max(b.tokens-1, 0)
}

// registered reports whether name is a registered cluster. It is asked
// only for refusals, which the per-peer limit already bounds.
func (r *refusals) registered(ctx context.Context, name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	_, err := r.svc.Store().GetCluster(ctx, name)
	return err == nil
}

// record audits one refusal of peer p, or counts it for the window's
// summary when p had RefusalRows of its kind in this window already.
func (r *refusals) record(ctx context.Context, p, action, target, result string, code codes.Code, reason string) {
	k := refusalKey{peer: p, action: action, result: result, code: code.String()}
	if r.registered(ctx, target) {
		k.target = target
	}
	r.mu.Lock()
	summaries, from, to := r.rollLocked(r.now())
	if _, ok := r.counts[k]; !ok && len(r.counts) >= maxPeers {
		k.peer = overflowPeer
	}
	r.counts[k]++
	n := r.counts[k]
	r.mu.Unlock()
	r.writeSummaries(summaries, from, to)
	if n > r.lim.RefusalRows {
		refusalsSummarised.WithLabelValues(action, k.code).Inc()
		return
	}
	target = ca.BoundAuditText(target, ca.MaxAuditTarget)
	reason = ca.BoundAuditText(reason, ca.MaxAuditReason)
	if err := r.svc.AuditResult(ctx, unauthenticatedActor, action, target, result, "peer "+p+": "+reason); err != nil {
		r.log.ErrorContext(ctx, "audit refusal", "error", err)
	}
	r.log.WarnContext(ctx, "request refused", "action", action, "peer", p, "target", target, "code", k.code, "reason", reason)
}

// rollLocked ends the window when it is over, returning the counts beyond
// RefusalRows and the window's bounds; the caller holds r.mu.
func (r *refusals) rollLocked(now time.Time) (map[refusalKey]int, time.Time, time.Time) {
	if r.windowStart.IsZero() {
		r.windowStart = now
	}
	if now.Sub(r.windowStart) < r.lim.RefusalWindow {
		return nil, time.Time{}, time.Time{}
	}
	var out map[refusalKey]int
	for k, n := range r.counts {
		if n > r.lim.RefusalRows {
			if out == nil {
				out = map[refusalKey]int{}
			}
			out[k] = n - r.lim.RefusalRows
		}
	}
	from := r.windowStart
	r.counts = map[refusalKey]int{}
	r.windowStart = now
	return out, from, now
}

// writeSummaries writes one audit row per summarised kind of refusal.
func (r *refusals) writeSummaries(summaries map[refusalKey]int, from, to time.Time) {
	if len(summaries) == 0 {
		return
	}
	// Not the request's context: the summary must land even when the
	// call that ended the window is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k, n := range summaries {
		reason := fmt.Sprintf("peer %s: %d more refusals (code %s) between %s and %s, not written one by one",
			k.peer, n, k.code, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
		if err := r.svc.AuditResult(ctx, unauthenticatedActor, k.action, k.target, k.result, reason); err != nil {
			r.log.Error("audit refusal summary", "error", err)
		}
		r.log.Warn("requests refused", "action", k.action, "peer", k.peer, "code", k.code, "count", n, "from", from, "to", to)
	}
}

// flush writes the summaries of the current window now and starts a new
// one.
func (r *refusals) flush() {
	r.mu.Lock()
	start, now := r.windowStart, r.now()
	r.windowStart = now.Add(-r.lim.RefusalWindow)
	summaries, _, _ := r.rollLocked(now)
	r.mu.Unlock()
	r.writeSummaries(summaries, start, now)
}

// run ends windows on time while no refusals arrive, and writes the last
// summaries when ctx ends.
func (r *refusals) run(ctx context.Context) {
	t := time.NewTicker(r.lim.RefusalWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.flush()
			return
		case <-t.C:
			r.mu.Lock()
			summaries, from, to := r.rollLocked(r.now())
			r.mu.Unlock()
			r.writeSummaries(summaries, from, to)
		}
	}
}
