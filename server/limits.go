package server

import (
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits bounds what callers of the Issuer service, none of whom is
// authenticated when they connect, can make the server hold. The zero value
// of each field takes its default.
type Limits struct {
	// MaxConnections bounds open TLS connections to the Issuer service;
	// further connections wait in the kernel's backlog (default 4096).
	// Every agent holds one for its trust bundle watch, and a second one,
	// with its intermediate as client certificate, while it reports and
	// renews: a fleet of N clusters needs up to 2N.
	MaxConnections int
	// MaxConcurrentStreams bounds concurrent calls on one connection
	// (default 16: an agent uses two).
	MaxConcurrentStreams uint32
	// RefusalBurst is how many refused calls a peer (remote IP address) may
	// make in a row; after that its calls are refused at once, without
	// authentication work or an audit row each, until its allowance refills
	// at RefusalRate per second (defaults 30 and 1). Calls that succeed cost
	// nothing. A negative RefusalBurst turns the limit off.
	RefusalBurst int
	RefusalRate  float64
	// RefusalWindow is the window over which repeated refusals of one peer
	// are summarised in the audit log: the first RefusalRows of each kind
	// are written one by one, the rest as one row with their count at the
	// end of the window (defaults 1 min and 5).
	RefusalWindow time.Duration
	RefusalRows   int
}

// Defaults for Limits.
const (
	defaultMaxConnections       = 4096
	defaultMaxConcurrentStreams = 16
	defaultRefusalBurst         = 30
	defaultRefusalRate          = 1
	defaultRefusalWindow        = time.Minute
	defaultRefusalRows          = 5
	// maxPeers bounds the per-peer state (refusal allowances and
	// summaries); peers beyond it share one entry.
	maxPeers = 4096
)

// Request bounds of the Issuer service.
const (
	// maxIssuerMessage bounds a request message: the largest legitimate
	// one is a SignIntermediateRequest with a CSR of at most ca.MaxCSRSize
	// (16 KiB) and a cluster name of at most 63 bytes.
	maxIssuerMessage = 20 << 10
	// maxIssuerHeaders bounds a request's metadata: a credential is at
	// most 16 KiB (maxCredentialLen).
	maxIssuerHeaders = 24 << 10
)

func (l Limits) withDefaults() Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = defaultMaxConnections
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = defaultMaxConcurrentStreams
	}
	if l.RefusalBurst == 0 {
		l.RefusalBurst = defaultRefusalBurst
	}
	if l.RefusalRate <= 0 {
		l.RefusalRate = defaultRefusalRate
	}
	if l.RefusalWindow <= 0 {
		l.RefusalWindow = defaultRefusalWindow
	}
	if l.RefusalRows <= 0 {
		l.RefusalRows = defaultRefusalRows
	}
	return l
}

// issuerServerOptions are the transport limits of the Issuer service.
func (l Limits) issuerServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxIssuerMessage),
		grpc.MaxHeaderListSize(maxIssuerHeaders),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		// Fixed flow-control windows (the HTTP/2 minimum) instead of
		// windows that grow with the measured bandwidth: what a
		// connection can make the server buffer stays at 64 KiB.
		grpc.InitialWindowSize(64 << 10),
		grpc.InitialConnWindowSize(64 << 10),
		// Every agent holds a connection for its watch, idle between
		// changes: its write buffer is released after each flush, and its
		// read buffer is 8 KiB (requests are CSRs and status reports),
		// instead of 32 KiB of each kept per connection.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(8 << 10),
		// A TLS handshake must finish in this time.
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Clients may ping every 20 s, also while no call is open
			// (an agent between renewals); faster pings close the
			// connection.
			MinTime: 20 * time.Second, PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// A connection without calls is closed after 5 min; an open
			// watch stream keeps it. A peer that stops answering pings is
			// dropped after 2 min + 20 s.
			MaxConnectionIdle: 5 * time.Minute,
			Time:              2 * time.Minute,
			Timeout:           20 * time.Second,
		}),
	}
}

// limitListener accepts at most n connections at a time: Accept waits for
// a connection to close first.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close closes the listener and ends a waiting Accept.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back once, on the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
