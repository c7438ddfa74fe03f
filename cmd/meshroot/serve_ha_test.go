package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// haReplica is one `meshroot serve` running in the test process on a
// PostgreSQL store shared with other replicas.
type haReplica struct {
	id, socket     string
	issuer, http   string
	logs           *syncBuffer
	cancel         context.CancelFunc
	done           chan error
	stopped        bool
	admin          meshrootv1.AdminClient
	adminConnClose func()
}

// haKeys returns a key folder and a passphrase file that replicas share
// (in Kubernetes: Secrets every replica mounts), as HA mode requires.
func haKeys(t *testing.T) (keyDir, passFile string) {
	t.Helper()
	dir := t.TempDir()
	passFile = filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "keys"), passFile
}

// startHAReplica runs `meshroot serve` as replica id on the database dsn,
// with its own data dir, the shared keys of haKeys, and config (YAML)
// added to its configuration file.
func startHAReplica(t *testing.T, dsn, keyDir, passFile, id, config string) *haReplica {
	t.Helper()
	dir, err := os.MkdirTemp("", "mr") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte("replicaID: "+id+"\nkeys:\n  dir: "+keyDir+"\n"+config), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &haReplica{id: id, socket: filepath.Join(dir, "admin.sock"), logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd := newRootCmd()
	cmd.SetArgs([]string{"serve", "--config", cfgFile, "--store", dsn, "--data-dir", filepath.Join(dir, "data"), "--socket", r.socket,
		"--passphrase-file", passFile, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off"})
	cmd.SetErr(r.logs)
	cmd.SetOut(r.logs)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(r.stop)
	testca.WaitFor(t, 30*time.Second, "replica "+id+" starting", func() bool {
		for _, line := range strings.Split(r.logs.String(), "\n") {
			var l struct{ Msg, Issuer, HTTP string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "meshroot server starting" {
				r.issuer, r.http = l.Issuer, l.HTTP
				return true
			}
		}
		return false
	})
	conn, err := grpc.NewClient("unix://"+r.socket, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.admin, r.adminConnClose = meshrootv1.NewAdminClient(conn), func() { conn.Close() }
	t.Cleanup(r.adminConnClose)
	return r
}

func (r *haReplica) stop() {
	if !r.stopped {
		r.stopped = true
		r.cancel()
		<-r.done
	}
}

// readyz returns /readyz's status code and body.
func (r *haReplica) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.http + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of an unlabelled metric from /metrics.
func (r *haReplica) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + r.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// leaders returns the replicas whose /readyz says they lead, and checks
// that every other one says it follows.
func leaders(t *testing.T, reps []*haReplica) []*haReplica {
	t.Helper()
	var out []*haReplica
	for _, r := range reps {
		if r.stopped {
			continue
		}
		code, body := r.readyz(t)
		switch {
		case code == http.StatusOK && strings.Contains(body, "(leader)"):
			out = append(out, r)
		case code == http.StatusOK && strings.Contains(body, "(follower)"):
		default:
			t.Errorf("replica %s /readyz: %d %q, want 200 naming its role", r.id, code, body)
		}
	}
	return out
}

// waitReady waits until every replica's /readyz answers 200.
func waitReady(t *testing.T, reps []*haReplica) {
	t.Helper()
	for _, r := range reps {
		testca.WaitFor(t, 20*time.Second, "replica "+r.id+" ready", func() bool { code, _ := r.readyz(t); return code == http.StatusOK })
	}
}

// waitOneLeader waits until exactly one replica leads and returns it.
func waitOneLeader(t *testing.T, reps []*haReplica) *haReplica {
	t.Helper()
	var l []*haReplica
	testca.WaitFor(t, 20*time.Second, "exactly one leader", func() bool {
		l = leaders(t, reps)
		return len(l) == 1
	})
	return l[0]
}

// watch opens WatchTrustBundle on r for cluster east, trusting roots, and
// returns the first bundle's sequence and the stream.
func (r *haReplica) watch(t *testing.T, roots *x509.CertPool) (uint64, meshrootv1.Issuer_WatchTrustBundleClient) {
	t.Helper()
	conn, err := grpc.NewClient(r.issuer, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := meshrootv1.NewIssuerClient(conn).WatchTrustBundle(t.Context(), &meshrootv1.WatchTrustBundleRequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("first bundle from %s: %v", r.id, err)
	}
	return first.GetSequence(), stream
}

// leaderSession returns the backend PID of the session holding the
// leadership lock in admin's database (pg_locks spans the server's
// databases, other tests' included), found as an administrator would.
func leaderSession(t *testing.T, admin *pgx.Conn) int32 {
	t.Helper()
	var pid int32
	if err := admin.QueryRow(t.Context(), `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'meshroot leader election'
		AND a.datname = current_database()`).Scan(&pid); err != nil {
		t.Fatalf("find the leader's session: %v", err)
	}
	return pid
}

// Three replicas on one database: a root prepared through one replica
// reaches a watcher of another within a second; exactly one replica leads
// (/readyz, meshroot_leader, root status); terminating the leader's
// database session makes it stop leading and another replica lead.
func TestHAReplicasFanOutAndFailover(t *testing.T) {
	clearEnv(t)
	dsn := pgtest.NewDatabase(t)
	keyDir, passFile := haKeys(t)
	var reps []*haReplica
	for _, id := range []string{"ra", "rb", "rc"} {
		reps = append(reps, startHAReplica(t, dsn, keyDir, passFile, id, ""))
	}
	// The failover once timed out under a loaded warm run (2026-12-03,
	// not reproduced in six runs alone): on a failure, say what each
	// replica's election did.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, r := range reps {
			for _, line := range strings.Split(r.logs.String(), "\n") {
				if strings.Contains(line, "leader") || strings.Contains(line, "election") {
					t.Logf("replica %s: %s", r.id, line)
				}
			}
		}
	})
	a, b := reps[0], reps[1]
	ctx := t.Context()
	root, err := a.admin.InitRoot(ctx, &meshrootv1.InitRootRequest{TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.admin.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	rc, err := x509.ParseCertificate(root.GetChain()[len(root.GetChain())-1])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(rc)
	waitReady(t, reps)

	// Fan-out: committed through a, seen by the watchers of b and c.
	type watcher struct {
		r      *haReplica
		seq    uint64
		stream meshrootv1.Issuer_WatchTrustBundleClient
	}
	var ws []watcher
	for _, r := range reps[1:] {
		seq, stream := r.watch(t, roots)
		ws = append(ws, watcher{r, seq, stream})
	}
	// The latency counts from the root.prepare audit row's time, which the
	// preparing transaction records just before it commits (the replicas
	// share this process's clock): not from the call, which first makes
	// and encrypts the new key.
	if _, err := a.admin.PrepareRoot(ctx, &meshrootv1.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	arrived := make([]time.Time, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() {
			// Other updates (a CRL signed by the leader) may come first.
			for {
				next, err := w.stream.Recv()
				if err != nil {
					t.Error(err)
					return
				}
				if len(next.GetRoots()) < 2 {
					continue
				}
				arrived[i] = time.Now()
				if next.GetSequence() <= w.seq {
					t.Errorf("watcher on %s got sequence %d with the new root, want > %d", w.r.id, next.GetSequence(), w.seq)
				}
				return
			}
		})
	}
	wg.Wait()
	audit, err := a.admin.ListAudit(ctx, &meshrootv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var committed time.Time
	for _, e := range audit.GetEntries() {
		if e.GetAction() == "root.prepare" && e.GetResult() == "ok" {
			committed = e.GetTime().AsTime()
		}
	}
	if committed.IsZero() {
		t.Fatal("no root.prepare audit row")
	}
	for i, w := range ws {
		if d := arrived[i].Sub(committed); arrived[i].IsZero() || d >= time.Second {
			t.Errorf("the root prepared through %s reached the watcher on %s %s after its transaction's audit row, want < 1 s", a.id, w.r.id, d)
		} else {
			t.Logf("prepare on %s reached the watcher on %s %s after the audit row", a.id, w.r.id, d)
		}
	}

	// One leader, visible in /readyz, the metrics and root status.
	first := waitOneLeader(t, reps)
	for _, r := range reps {
		want := "0"
		if r == first {
			want = "1"
		}
		if got := r.metric(t, "meshroot_leader"); got != want {
			t.Errorf("replica %s meshroot_leader = %q, want %s", r.id, got, want)
		}
	}
	st := cliOK(t, "root", "status", "--socket", b.socket)
	if !strings.Contains(st.stdout, "leader: "+first.id+"\n") {
		t.Errorf("root status through %s does not name %s the leader:\n%s", b.id, first.id, st.stdout)
	}

	// Fencing: the leader's session ends; it stops leading, another leads.
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1, 10000)`, leaderSession(t, admin)); err != nil {
		t.Fatal(err)
	}
	var second *haReplica
	testca.WaitFor(t, 15*time.Second, "another replica leading", func() bool {
		l := leaders(t, reps)
		if len(l) > 1 {
			t.Fatalf("%d replicas lead at once", len(l))
		}
		if len(l) == 1 && l[0] != first {
			second = l[0]
			return true
		}
		return false
	})
	if got := first.metric(t, "meshroot_leader_changes_total"); got != "2" {
		t.Errorf("old leader %s meshroot_leader_changes_total = %q, want 2 (became leader, lost it)", first.id, got)
	}
	st = cliOK(t, "root", "status", "--socket", first.socket)
	if !strings.Contains(st.stdout, "leader: "+second.id+"\n") {
		t.Errorf("root status after the failover does not name %s the leader:\n%s", second.id, st.stdout)
	}
}

// fetchLog records the fetches of a bundle endpoint by User-Agent.
type fetchLog struct {
	mu      sync.Mutex
	fetches []fetch
	active  map[string]int // fetches in flight by agent
	overlap []string
}

type fetch struct {
	agent      string
	start, end time.Time
}

// handler serves doc, holding each fetch for hold, and records it.
func (l *fetchLog) handler(doc []byte, hold time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua := r.UserAgent()
		l.mu.Lock()
		for other, n := range l.active {
			if other != ua && n > 0 {
				l.overlap = append(l.overlap, fmt.Sprintf("%s fetched while %s was fetching", ua, other))
			}
		}
		l.active[ua]++
		start := time.Now()
		l.mu.Unlock()
		time.Sleep(hold)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
		l.mu.Lock()
		l.active[ua]--
		l.fetches = append(l.fetches, fetch{ua, start, time.Now()})
		l.mu.Unlock()
	})
}

// agents returns the User-Agents in the order they first fetched, and
// whether any agent fetched again after another one had started.
func (l *fetchLog) agents() (order []string, interleaved bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fs := slices.Clone(l.fetches)
	slices.SortFunc(fs, func(a, b fetch) int { return a.start.Compare(b.start) })
	for _, f := range fs {
		if len(order) > 0 && order[len(order)-1] == f.agent {
			continue
		}
		if slices.Contains(order, f.agent) {
			interleaved = true
		}
		order = append(order, f.agent)
	}
	return order, interleaved
}

// Two replicas never run a federation watcher for the same peer at once:
// the peer's bundle endpoint records every fetch by the replica that made
// it (its User-Agent). The leader fetches every ~100 ms; when its session
// is terminated, it must have stopped fetching before the new leader
// starts: no fetch of one replica overlaps another's, and once the new
// leader fetched, the old one never fetches again.
func TestHAFederationWatcherOnLeaderOnly(t *testing.T) {
	clearEnv(t)
	peerCA := testca.New(t, "")
	peerRoot := testca.New(t, "peer.example")
	doc, err := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("peer.example"), []*x509.Certificate{peerRoot.Cert}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	log := &fetchLog{active: map[string]int{}}
	ep := httptest.NewUnstartedServer(log.handler(doc, 30*time.Millisecond))
	ep.TLS = &tls.Config{Certificates: []tls.Certificate{peerCA.Leaf(t, testca.LeafOpts{IP: true})}}
	ep.StartTLS()
	t.Cleanup(ep.Close)
	caFile := filepath.Join(t.TempDir(), "peer-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peerCA.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	config := "federation:\n  minRefresh: 50ms\n  maxRefresh: 100ms\n  caFile: " + caFile + "\n"

	dsn := pgtest.NewDatabase(t)
	keyDir, passFile := haKeys(t)
	var reps []*haReplica
	for _, id := range []string{"fa", "fb", "fc"} {
		reps = append(reps, startHAReplica(t, dsn, keyDir, passFile, id, config))
	}
	ctx := t.Context()
	if _, err := reps[0].admin.InitRoot(ctx, &meshrootv1.InitRootRequest{TrustDomain: testTD}); err != nil {
		t.Fatal(err)
	}
	cliOK(t, "federation", "add", "peer.example", "--url", ep.URL+"/bundle", "--profile", "https_web", "--socket", reps[1].socket)
	waitReady(t, reps)
	first := waitOneLeader(t, reps)
	agentOf := func(r *haReplica) string { return "meshroot-federation (replica " + r.id + ")" }
	testca.WaitFor(t, 20*time.Second, "the leader fetching the peer's bundle", func() bool {
		order, _ := log.agents()
		return slices.Contains(order, agentOf(first))
	})
	time.Sleep(500 * time.Millisecond) // several fetches by the leader

	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1, 10000)`, leaderSession(t, admin)); err != nil {
		t.Fatal(err)
	}
	var order []string
	testca.WaitFor(t, 20*time.Second, "another replica fetching the peer's bundle", func() bool {
		order, _ = log.agents()
		return len(order) >= 2
	})
	time.Sleep(time.Second) // the new leader fetches; the old one must not

	order, interleaved := log.agents()
	log.mu.Lock()
	overlap, n := log.overlap, len(log.fetches)
	log.mu.Unlock()
	t.Logf("%d fetches; fetchers in order: %v", n, order)
	if len(overlap) > 0 {
		t.Errorf("two replicas fetched the peer's bundle at once: %v", overlap)
	}
	if interleaved {
		t.Errorf("a replica fetched again after another had taken over: %v", order)
	}
	if order[0] != agentOf(first) || order[1] == agentOf(first) {
		t.Errorf("fetchers %v: want the first leader %s, then another", order, first.id)
	}
	for _, a := range order {
		if !strings.HasPrefix(a, "meshroot-federation (replica f") {
			t.Errorf("fetch by %q, not a replica", a)
		}
	}

	// `federation refresh` reaches the watchers on the leader; a follower
	// says it is not the leader rather than pretend.
	now := waitOneLeader(t, reps)
	cliOK(t, "federation", "refresh", "peer.example", "--socket", now.socket)
	for _, r := range reps {
		if r == now {
			continue
		}
		if res := cli(t, "federation", "refresh", "peer.example", "--socket", r.socket); res.code == exitOK || !strings.Contains(res.stderr, "not the leader") {
			t.Errorf("federation refresh on follower %s: exit %d %q, want a refusal saying it is not the leader", r.id, res.code, res.stderr)
		}
	}
}
