package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
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

// countingKube counts the reads of Secrets (kubefake otherwise).
type countingKube struct {
	*kubefake.Clientset
	gets, writes atomic.Int64
}

func (k *countingKube) Secrets(ns string) kubeclient.SecretInterface {
	return countingSecrets{k.Clientset.Secrets(ns), k}
}

type countingSecrets struct {
	kubeclient.SecretInterface
	k *countingKube
}

func (s countingSecrets) Get(ctx context.Context, name string, opts metav1.GetOptions) (*kubeclient.Secret, error) {
	s.k.gets.Add(1)
	return s.SecretInterface.Get(ctx, name, opts)
}

func (s countingSecrets) Create(ctx context.Context, v *kubeclient.Secret, opts metav1.CreateOptions) (*kubeclient.Secret, error) {
	s.k.writes.Add(1)
	return s.SecretInterface.Create(ctx, v, opts)
}

func (s countingSecrets) Update(ctx context.Context, v *kubeclient.Secret, opts metav1.UpdateOptions) (*kubeclient.Secret, error) {
	s.k.writes.Add(1)
	return s.SecretInterface.Update(ctx, v, opts)
}

func (s countingSecrets) UpdateMeta(ctx context.Context, v *kubeclient.Secret, opts metav1.UpdateOptions) (*kubeclient.Secret, error) {
	s.k.writes.Add(1)
	return s.SecretInterface.UpdateMeta(ctx, v, opts)
}

// TestAgentReadsSecretOncePerReconcile: a reconcile reads the cacerts
// Secret once; its later steps (ca-crl.pem, the status report) work on
// what the write returned. The Secret holds the fleet's CRLs (about
// 1.3 KiB per cluster), and reading it again per step cost the API
// server and every agent megabytes per change at 1,000 clusters. The
// report still tells the server what was just written.
func TestAgentReadsSecretOncePerReconcile(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	kube := &countingKube{Clientset: kubefake.New("")}
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	a, err := agent.New(agent.Config{
		Server: ts.srv.Addr(), ServerCA: ca.EncodeCerts(roots), Cluster: "east", JoinToken: ts.token(t, "east"), Kube: kube,
		Restart: agent.RestartNever, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return *clock.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })

	reconcile := func(step string) (gets, writes int64) {
		t.Helper()
		g0, w0 := kube.gets.Load(), kube.writes.Load()
		if _, err := a.Reconcile(t.Context()); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		return kube.gets.Load() - g0, kube.writes.Load() - w0
	}
	if gets, writes := reconcile("bootstrap"); gets != 1 || writes < 1 {
		t.Fatalf("bootstrap reconcile: %d Secret reads and %d writes, want 1 read and a write", gets, writes)
	}
	cur, err := agent.ReadSecret(t.Context(), kube.Clientset, agent.DefaultSecret)
	if err != nil || cur.CACerts == nil {
		t.Fatalf("cacerts: %v", err)
	}
	first := ca.SerialHex(cur.CACerts.Cert.SerialNumber)

	later := cur.CACerts.Cert.NotAfter.Add(-time.Minute)
	clock.Store(&later)
	if gets, writes := reconcile("renewal"); gets != 1 || writes < 1 {
		t.Fatalf("renewal reconcile: %d Secret reads and %d writes, want 1 read and a write", gets, writes)
	}
	cur, err = agent.ReadSecret(t.Context(), kube.Clientset, agent.DefaultSecret)
	if err != nil || cur.CACerts == nil {
		t.Fatalf("cacerts after renewal: %v", err)
	}
	renewed := ca.SerialHex(cur.CACerts.Cert.SerialNumber)
	if renewed == first {
		t.Fatal("the agent did not renew")
	}
	c, err := ts.st.GetCluster(t.Context(), "east")
	if err != nil || c.Status.IntermediateSerial != renewed {
		t.Fatalf("server's record of east: %+v, %v; want the report of %s, just written", c.Status, err, renewed)
	}
	if gets, writes := reconcile("steady"); gets != 1 || writes != 0 {
		t.Fatalf("reconcile with nothing to do: %d Secret reads and %d writes, want 1 and 0", gets, writes)
	}
}
