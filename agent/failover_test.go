package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

func TestParseServers(t *testing.T) {
	got, err := ParseServers([]string{"a.example:8443, b.example:8443", "a.example:8443", "[::1]:8443", ""})
	if err != nil || strings.Join(got, " ") != "a.example:8443 b.example:8443 [::1]:8443" {
		t.Fatalf("ParseServers = %q, %v", got, err)
	}
	for _, bad := range [][]string{{"a.example"}, {"a.example:8443,:8443"}, {"a.example:"}, {""}, nil} {
		if got, err := ParseServers(bad); err == nil {
			t.Errorf("ParseServers(%q) = %q, want an error", bad, got)
		}
	}
	many := make([]string, maxServers+1)
	for i := range many {
		many[i] = net.JoinHostPort("127.0.0.1", string(rune('0'+i%10))+"0"+string(rune('0'+i/10)))
	}
	if _, err := ParseServers(many); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d servers: %v, want a refusal", len(many), err)
	}
}

// replica is a stub Issuer replica whose watch pushes every change and
// records the sequence each new watch says the agent holds.
type replica struct {
	*stubIssuer
	mu      sync.Mutex
	changed chan struct{}
	watches atomic.Int64
	haves   chan uint64
}

func (r *replica) set(b *meshrootv1.TrustBundle) {
	r.stubIssuer.mu.Lock()
	r.stubIssuer.bundle = b
	r.stubIssuer.mu.Unlock()
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *replica) WatchTrustBundle(req *meshrootv1.WatchTrustBundleRequest, stream meshrootv1.Issuer_WatchTrustBundleServer) error {
	r.watches.Add(1)
	defer r.watches.Add(-1)
	select {
	case r.haves <- req.GetHaveSequence():
	default:
	}
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if err := stream.Send(r.current()); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ch:
		}
	}
}

// freezer forwards TCP connections to a server until frozen: then it keeps
// every connection open and accepts new ones, but passes no byte in either
// direction, as a server that stopped answering (or a network path that
// drops everything) does.
type freezer struct {
	ln     net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c, target)
		}
	}()
	return f
}

func (f *freezer) serve(c net.Conn, target string) {
	defer c.Close()
	if f.frozen.Load() {
		_, _ = io.Copy(io.Discard, c) // accepts, never answers
		return
	}
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			for f.frozen.Load() {
				time.Sleep(20 * time.Millisecond)
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(s, c)
	pipe(c, s)
}

// startReplicas serves n stub replicas of one trust domain (one root, one
// server CA), each behind a freezer; it returns them, their addresses and
// the root's PEM.
func startReplicas(t *testing.T, n int) ([]*replica, []*freezer, []string, []byte) {
	t.Helper()
	a, root, _ := testRootAuthority(t)
	sKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sca, err := a.SignServerCA(sKey.Public(), "example.org", ca.ParseServerNames([]string{"localhost", "127.0.0.1"}), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := mintServerCert(t, sca, sKey, sca)
	var reps []*replica
	var fs []*freezer
	var addrs []string
	for range n {
		r := &replica{stubIssuer: &stubIssuer{auth: a, root: root, bundle: &meshrootv1.TrustBundle{
			TrustDomain: "example.org", Roots: [][]byte{root.Raw}, Sequence: 1, ActiveRootId: ca.RootID(root),
		}}, changed: make(chan struct{}), haves: make(chan uint64, 16)}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(
			grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert})),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 100 * time.Millisecond, PermitWithoutStream: true}),
			// A handshake through a frozen freezer never completes; Stop
			// waits for it (default 120 s).
			grpc.ConnectionTimeout(2*time.Second),
		)
		meshrootv1.RegisterIssuerServer(srv, r)
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(srv.Stop)
		f := newFreezer(t, ln.Addr().String())
		reps, fs, addrs = append(reps, r), append(fs, f), append(addrs, f.ln.Addr().String())
	}
	return reps, fs, addrs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
}

// TestAgentFailsOverFromSilentReplica: an agent given two replicas
// watches one of them; that replica stops answering (its connections stay
// open, nothing comes back). Keepalive (shortened here to gRPC's floor of
// 10 s + 1 s from 25 s + 15 s) gives up on it, the watch resumes on the other replica
// saying which sequence it holds, and a bundle change there reaches the
// cacerts Secret.
func TestAgentFailsOverFromSilentReplica(t *testing.T) {
	oldTime, oldTimeout, oldConnect := keepaliveTime, keepaliveTimeout, connectTimeout
	keepaliveTime, keepaliveTimeout, connectTimeout = 10*time.Second, time.Second, 2*time.Second
	t.Cleanup(func() { keepaliveTime, keepaliveTimeout, connectTimeout = oldTime, oldTimeout, oldConnect })

	reps, fs, addrs, rootPEM := startReplicas(t, 2)
	a, kube := newTestAgent(t, addrs[0], rootPEM)
	a.Close()
	a.cfg.Servers = addrs[1:]
	var err error
	if a.servers, err = ParseServers(append([]string{a.cfg.Server}, a.cfg.Servers...)); err != nil {
		t.Fatal(err)
	}
	if a.client, err = dial(a.servers, a.serverRoots, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, 20*time.Second, "the agent wrote cacerts with the one root", func() bool { return secretRoots(kube) == 1 })
	var watched, other int
	waitFor(t, 10*time.Second, "the agent watches one replica", func() bool {
		w0, w1 := reps[0].watches.Load(), reps[1].watches.Load()
		watched, other = 0, 1
		if w1 == 1 && w0 == 0 {
			watched, other = 1, 0
		}
		return w0+w1 == 1
	})
	for len(reps[other].haves) > 0 {
		<-reps[other].haves
	}
	fs[watched].frozen.Store(true)
	frozeAt := time.Now()

	waitFor(t, 15*time.Second, "the watch resumed on the other replica", func() bool { return reps[other].watches.Load() == 1 })
	if have := <-reps[other].haves; have != 1 {
		t.Errorf("the resumed watch said the agent holds sequence %d, want 1", have)
	}
	t.Logf("watch resumed on the other replica %s after the first stopped answering", time.Since(frozeAt).Round(time.Millisecond))

	next := proto.Clone(reps[other].current()).(*meshrootv1.TrustBundle)
	next.Sequence = 2
	next.Roots = append(next.Roots, testCert(t).Raw)
	reps[other].set(next)
	waitFor(t, 15*time.Second, "the new root from the other replica reached the Secret", func() bool { return secretRoots(kube) == 2 })
	t.Logf("new root applied %s after the freeze", time.Since(frozeAt).Round(time.Millisecond))
}
