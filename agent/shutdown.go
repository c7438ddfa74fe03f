package agent

import (
	"context"
	"time"
)

// ShutdownGrace bounds how long a reconcile already under way when the
// agent is told to stop (SIGTERM) runs on. A renewal the server has
// answered is then written to the Secret instead of being dropped, which
// would leave the server holding an active intermediate that no istiod
// has. Kubernetes waits 30 s (terminationGracePeriodSeconds) by default.
const ShutdownGrace = 10 * time.Second

// graceful returns a context for one reconcile: it is not cancelled when
// ctx is, but grace after that. Call the CancelFunc when the reconcile
// returns.
func graceful(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return rctx, func() {
		stop()
		cancel()
	}
}
