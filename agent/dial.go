package agent

import (
	"context"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
)

// Network bounds of the agent's connection to the server, for the networks
// clusters sit behind: egress proxies, NATs that forget idle connections
// without telling either end, and addresses where something accepts TCP
// but never answers. They are variables only so that tests can shorten
// them.
var (
	// keepaliveTime is how long a connection may be silent before the
	// agent pings the server. The server closes connections that ping
	// more often than every 20 s (server/limits.go), so it stays above.
	keepaliveTime = 25 * time.Second
	// keepaliveTimeout is how long a ping may go unanswered before the
	// connection counts as dead: a dropped watch is noticed within
	// keepaliveTime+keepaliveTimeout (40 s) and re-established.
	keepaliveTimeout = 15 * time.Second
	// connectTimeout bounds TCP connect plus the TLS and HTTP/2 handshakes.
	connectTimeout = 10 * time.Second
	// callTimeout bounds each unary call that has no earlier deadline.
	callTimeout = 30 * time.Second
)

// dialOptions are the agent's gRPC options besides its credentials. There
// is deliberately no custom dialer: gRPC then honours HTTPS_PROXY and
// NO_PROXY (through an HTTP CONNECT proxy) for the server's address. Go
// never proxies localhost or loopback addresses, whatever NO_PROXY says.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: keepaliveTime, Timeout: keepaliveTimeout,
			// The server permits pings without calls (an agent between
			// renewals); they keep a NAT's mapping alive too.
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Minute},
			MinConnectTimeout: connectTimeout,
		}),
		grpc.WithChainUnaryInterceptor(boundedCall),
	}
}

// boundedCall gives a unary call callTimeout unless it already has a
// shorter deadline, so that a server that stops answering mid-call cannot
// hold the agent.
func boundedCall(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > callTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
