package e2e

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
)

// The burst: burstAgents clusters, each with its own join token, each
// running the real agent in folder mode burstRounds times in a row, as
// `meshroot agent --out DIR --once` runs would (a new agent each time,
// reading the folder the previous one wrote). The intermediate is due for
// renewal at once (RenewFraction 1e-9 of a year: 32 ms), so every run issues.
const (
	burstAgents = 50
	burstRounds = 10
)

// burst records what the agents received.
type burst struct {
	mu       sync.Mutex
	written  map[string][]string // cluster -> serials written, in order
	retries  map[string]int      // cluster -> "retrying" warnings of RunOnce
	joined   map[string]bool
	received int
	warnings []string
	done     chan struct{}
	elapsed  time.Duration
}

// burstLog is the agents' slog handler: it records every intermediate
// written to a folder ("cacerts written", with its serial) and every retry.
type burstLog struct {
	b       *burst
	cluster string
}

func (h burstLog) Enabled(context.Context, slog.Level) bool { return true }
func (h burstLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h burstLog) WithGroup(string) slog.Handler            { return h }
func (h burstLog) Handle(_ context.Context, r slog.Record) error {
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case r.Message == "cacerts written":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "serial" {
				b.written[h.cluster] = append(b.written[h.cluster], a.Value.String())
				b.joined[h.cluster] = true
				b.received++
			}
			return true
		})
	case r.Message == "cacerts not written; retrying":
		b.retries[h.cluster]++
		fallthrough
	default:
		if len(b.warnings) < 2000 && (r.Level >= slog.LevelWarn || testing.Verbose()) {
			var errText string
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "error" {
					errText = a.Value.String()
				}
				return true
			})
			b.warnings = append(b.warnings, fmt.Sprintf("%s %s: %s: %s", time.Now().Format("15:04:05.000"), h.cluster, r.Message, errText))
		}
	}
	return nil
}

func (b *burst) counts() (received, joined int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.received, len(b.joined)
}

// startBurst registers the clusters through the Admin API, then runs the
// agents in the background against every replica (each agent lists all
// three, starting with a different one).
func (r *haRig) startBurst(t *testing.T) *burst {
	t.Helper()
	admin := r.admin(t, r.reps[0])
	ctx := t.Context()
	tokens := make([]string, burstAgents)
	for i := range burstAgents {
		name := fmt.Sprintf("c%02d", i)
		if _, err := admin.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		tok, err := admin.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: name, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok.Token
	}
	serverCA, err := os.ReadFile(r.serverCA)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, s := range r.reps {
		addrs = append(addrs, s.issuerAddr)
	}
	b := &burst{written: map[string][]string{}, retries: map[string]int{}, joined: map[string]bool{}, done: make(chan struct{})}
	runCtx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range burstAgents {
		name := fmt.Sprintf("c%02d", i)
		servers := append(slices.Clone(addrs[i%3:]), addrs[:i%3]...)
		cfg := agent.Config{
			Server: servers[0], Servers: servers[1:], ServerCA: serverCA, Cluster: name, JoinToken: tokens[i],
			RenewFraction: 1e-9, MaxBackoff: 2 * time.Second, Log: slog.New(burstLog{b, name}),
		}
		dir := filepath.Join(r.dir, "agents", name)
		wg.Go(func() {
			for round := range burstRounds {
				kube, err := agent.NewFolder(dir, agent.SecretRef{})
				if err != nil {
					t.Error(err)
					return
				}
				cfg.Kube = kube
				a, err := agent.New(cfg)
				if err != nil {
					t.Error(err)
					return
				}
				err = a.RunOnce(runCtx)
				a.Close()
				if err != nil {
					t.Errorf("agent %s, run %d: %v", name, round+1, err)
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		b.elapsed = time.Since(start)
		close(b.done)
	}()
	return b
}

// waitMidBurst waits until every agent has joined (its join token is spent,
// later runs renew with their intermediate) and at least n intermediates
// were received.
func (b *burst) waitMidBurst(t *testing.T, n int) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			t.Logf("agent log (warnings; everything with -v):\n%s", strings.Join(b.warnings, "\n"))
			b.mu.Unlock()
		}
	})
	eventually(t, 3*time.Minute, fmt.Sprintf("every agent joined and %d intermediates received", n), func() bool {
		got, joined := b.counts()
		return joined == burstAgents && got >= n
	})
}

// wait waits for the burst to end and returns how long it took.
func (b *burst) wait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(6 * time.Minute):
		t.Fatal("the burst did not end within 6 minutes")
	}
	return b.elapsed
}

// checkBurst checks the invariants after a burst through live, a replica
// that is up: every agent's folder holds a valid intermediate chaining to
// the trust bundle; every intermediate an agent received is in the
// database exactly once, under its cluster, with its audit entry; the
// database holds no more rows for a cluster than the agent received plus
// its retries (a response lost in the fault); the audit chain verifies.
func (r *haRig) checkBurst(t *testing.T, b *burst, live *server) (retries int) {
	t.Helper()
	m := r.m.with()
	m.socket = live.socket
	roots := x509.NewCertPool()
	for _, c := range parseCerts(t, "bundle", []byte(m.ok("bundle", "show", "-o", "pem").stdout)) {
		roots.AddCert(c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	dbRows := map[string][]string{} // cluster -> serials
	serialCluster := map[string]string{}
	rows, err := conn.Query(ctx, `SELECT cluster, serial FROM intermediates`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var cl, serial string
		if err := rows.Scan(&cl, &serial); err != nil {
			t.Fatal(err)
		}
		dbRows[cl] = append(dbRows[cl], serial)
		serialCluster[serial] = cl
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	audited := map[string]int{}
	rows, err = conn.Query(ctx, `SELECT details::jsonb->>'serial' FROM audit_log WHERE action = 'intermediate.issue' AND result = 'ok'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var serial string
		if err := rows.Scan(&serial); err != nil {
			t.Fatal(err)
		}
		audited[serial]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	total := 0
	for i := range burstAgents {
		name := fmt.Sprintf("c%02d", i)
		got := b.written[name]
		total += len(got)
		retries += b.retries[name]
		seen := map[string]bool{}
		for _, s := range got {
			if seen[s] {
				t.Errorf("%s: intermediate %s delivered twice", name, s)
			}
			seen[s] = true
			if cl, ok := serialCluster[s]; !ok {
				t.Errorf("%s: received intermediate %s is not in the database (lost)", name, s)
			} else if cl != name {
				t.Errorf("%s: received intermediate %s is recorded for cluster %s", name, s, cl)
			}
		}
		if len(got) < burstRounds {
			t.Errorf("%s: received %d intermediates, want at least %d", name, len(got), burstRounds)
		}
		if extra := len(dbRows[name]) - len(got); extra < 0 || extra > b.retries[name] {
			t.Errorf("%s: %d intermediates in the database, %d received, %d retries: want received <= rows <= received + retries",
				name, len(dbRows[name]), len(got), b.retries[name])
		}
		dir := filepath.Join(r.dir, "agents", name)
		c := loadCACerts(t, dir)
		if len(got) > 0 && ca.SerialHex(c.cert.SerialNumber) != got[len(got)-1] {
			t.Errorf("%s: folder holds intermediate %s, not the last one received (%s)", name, ca.SerialHex(c.cert.SerialNumber), got[len(got)-1])
		}
		inter := x509.NewCertPool()
		for _, cc := range c.chain[1:] {
			inter.AddCert(cc)
		}
		if _, err := c.cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: the folder's intermediate does not chain to the trust bundle: %v", name, err)
		}
		if !c.cert.IsCA || time.Now().After(c.cert.NotAfter) {
			t.Errorf("%s: the folder's intermediate is not a valid CA certificate now", name)
		}
		if !publicKeyMatches(c.cert, c.key) {
			t.Errorf("%s: ca-key.pem does not match ca-cert.pem", name)
		}
	}
	for serial := range serialCluster {
		if audited[serial] != 1 {
			t.Errorf("intermediate %s has %d intermediate.issue audit entries, want 1", serial, audited[serial])
		}
	}
	if len(audited) != len(serialCluster) {
		t.Errorf("intermediate.issue audit entries name %d serials; %d intermediates in the database", len(audited), len(serialCluster))
	}
	if total < burstAgents*burstRounds {
		t.Errorf("agents received %d intermediates in all, want at least %d", total, burstAgents*burstRounds)
	}
	m.ok("audit", "verify")
	kinds := map[string]int{}
	for _, w := range b.warnings {
		if _, msg, ok := strings.Cut(w, ": cacerts not written; retrying: "); ok {
			kinds[msg]++
		}
	}
	for msg, n := range kinds {
		t.Logf("agent retries (%d): %s", n, msg)
	}
	t.Logf("burst: %d intermediates received, %d rows in the database, %d agent retries", total, len(serialCluster), retries)
	return retries
}

// publicKeyMatches says whether key is cert's key.
func publicKeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
