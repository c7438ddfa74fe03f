package server_test

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
)

// countingRelay forwards TCP connections to target and counts them: how
// many were accepted, and how many are still open.
type countingRelay struct {
	addr           string
	accepted, open atomic.Int64
}

func startCountingRelay(t *testing.T, target string) *countingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &countingRelay{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.accepted.Add(1)
			r.open.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var once sync.Once
				done := func() { once.Do(func() { c.Close(); up.Close(); r.open.Add(-1) }) }
				go func() { io.Copy(up, c); done() }()
				io.Copy(c, up)
				done()
			}()
		}
	}()
	return r
}

// TestAgentReportsOverOneConnection: every reconcile ends with a status
// report authenticated by the cluster's intermediate (every change of the
// fleet makes every agent report); the reports share one connection while
// the intermediate stays the same, instead of a TLS handshake each. A new
// intermediate gets a new connection, and the old one is closed.
func TestAgentReportsOverOneConnection(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	relay := startCountingRelay(t, ts.srv.Addr())
	kube, err := agent.NewFolder(t.TempDir(), agent.DefaultSecret)
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	a, err := agent.New(agent.Config{
		Server: relay.addr, ServerCA: ca.EncodeCerts(roots), Cluster: "east", JoinToken: ts.token(t, "east"), Kube: kube,
		Restart: agent.RestartNever, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return *clock.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })

	lastContact := func() time.Time {
		t.Helper()
		c, err := ts.st.GetCluster(t.Context(), "east")
		if err != nil {
			t.Fatal(err)
		}
		return c.Status.LastContact
	}
	var contacts []time.Time
	for i := range 4 {
		if _, err := a.Reconcile(t.Context()); err != nil {
			t.Fatalf("reconcile %d: %v", i, err)
		}
		contacts = append(contacts, lastContact())
		time.Sleep(20 * time.Millisecond)
	}
	for i := 1; i < len(contacts); i++ {
		if !contacts[i].After(contacts[i-1]) {
			t.Fatalf("reconcile %d reported no contact (last contact %v, before %v)", i, contacts[i], contacts[i-1])
		}
	}
	// The join and the watch's calls on one connection, the 4 reports on
	// another.
	if n := relay.accepted.Load(); n != 2 {
		t.Fatalf("connections after a join and 4 reports: %d, want 2", n)
	}
	cur, err := agent.ReadSecret(t.Context(), kube, agent.DefaultSecret)
	if err != nil || cur.CACerts == nil {
		t.Fatalf("cacerts: %v", err)
	}
	first := ca.SerialHex(cur.CACerts.Cert.SerialNumber)

	// Past the renewal time: the renewal goes over the connection held,
	// the report after it presents the new intermediate on a new one.
	later := cur.CACerts.Cert.NotAfter.Add(-time.Minute)
	clock.Store(&later)
	if _, err := a.Reconcile(t.Context()); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	cur, err = agent.ReadSecret(t.Context(), kube, agent.DefaultSecret)
	if err != nil || cur.CACerts == nil {
		t.Fatalf("cacerts after renewal: %v", err)
	}
	renewed := ca.SerialHex(cur.CACerts.Cert.SerialNumber)
	if renewed == first {
		t.Fatal("the agent did not renew")
	}
	if c, err := ts.st.GetCluster(t.Context(), "east"); err != nil || c.Status.IntermediateSerial != renewed {
		t.Fatalf("server's record of east: %+v, %v; want the report of %s", c.Status, err, renewed)
	}
	if n := relay.accepted.Load(); n != 3 {
		t.Fatalf("connections after the renewal: %d, want 3 (one for the new intermediate)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for relay.open.Load() != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := relay.open.Load(); n != 2 {
		t.Fatalf("open connections after the renewal: %d, want 2 (the old intermediate's closed)", n)
	}
}
