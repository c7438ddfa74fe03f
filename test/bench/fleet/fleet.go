package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
)

// fleet is N agents (the real agent package, agent.Agent.Run), in this
// process or in agent shards (shard.go), each keeping one registered
// cluster's cacerts Secret in its own fake clientset, each with its own
// gRPC connection to the server.
type fleet struct {
	addr     string
	serverCA []byte
	admin    ca.Admin
	warn     *warnLog
	members  []*member
	wake     chan struct{}
	kubeCopy bool // the clusters store copies of the Secrets written (-kube-copy)
	stopped  bool
	procs    int   // agent shards (-agent-procs); 1: the agents run in this process
	memLimit int64 // the soft memory limit the shards share
	shards   []*shardProc
}

type member struct {
	name string
	rec  *recorder
	// In this process: the agent, its cluster's API (newRecordingKube)
	// and its log.
	kube   *kubefake.Clientset
	log    *memberLog
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
	// In an agent shard: the shard and the member's number there.
	shard *shardProc
	id    int
}

func newFleet(addr string, admin ca.Admin, roots []byte, warn *warnLog) *fleet {
	return &fleet{addr: addr, admin: admin, serverCA: roots, warn: warn, wake: make(chan struct{}, 1)}
}

func (f *fleet) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// grow registers clusters until there are n, each with a join token, and
// starts their agents; it returns once every new agent has written its
// cacerts Secret.
func (f *fleet) grow(ctx context.Context, n int) error {
	from := len(f.members)
	if n <= from {
		return nil
	}
	news := make([]*member, n-from)
	tokens := make([]string, n-from)
	errc := make(chan error, n-from)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range news {
		name := fmt.Sprintf("c%04d", from+i)
		rec := &recorder{notify: f.poke}
		news[i] = &member{name: name, rec: rec, log: &memberLog{warn: f.warn, rec: rec}}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := f.admin.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
				errc <- fmt.Errorf("cluster add %s: %w", name, err)
				return
			}
			tok, err := f.admin.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: name, TTL: time.Hour})
			if err != nil {
				errc <- fmt.Errorf("token create %s: %w", name, err)
				return
			}
			tokens[i] = tok.Token
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	// New agents are handed the current trust bundle, as an operator
	// would after a rotation (the server's certificate follows the root).
	tb, err := f.admin.TrustBundle(ctx)
	if err != nil {
		return err
	}
	if f.serverCA, err = rootsPEM(tb); err != nil {
		return err
	}
	if f.procs > 1 {
		if err := f.startShards(news, from, tokens); err != nil {
			return err
		}
		news = nil
	}
	for i, m := range news {
		m.kube = newRecordingKube(m.rec, f.kubeCopy)
		if m.a, m.cancel, m.done, err = runAgent(ctx, f.addr, f.serverCA, m.name, tokens[i], m.kube, m.log); err != nil {
			return err
		}
	}
	f.members = append(f.members, news...)
	_, err = f.waitAll(ctx, time.Time{}, f.members[from:], func(applied) bool { return true }, 5*time.Minute)
	return err
}

// runAgent starts the agent of cluster name, writing to kube and logging
// to log, until cancel; done closes when it has stopped.
func runAgent(ctx context.Context, server string, serverCA []byte, name, token string, kube *kubefake.Clientset, log *memberLog) (a *agent.Agent, cancel context.CancelFunc, done chan struct{}, err error) {
	a, err = agent.New(agent.Config{
		Server: server, ServerCA: serverCA, Cluster: name, JoinToken: token,
		Kube: kube, Restart: agent.RestartNever, Log: slog.New(log.handler()),
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("agent %s: %w", name, err)
	}
	actx, cancel := context.WithCancel(ctx)
	done = make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(actx); err != nil {
			slog.New(log.handler()).Error("agent stopped", "cluster", name, "error", err)
		}
	}()
	return a, cancel, done, nil
}

// startShards starts the agents of news (members from on) in the agent
// shards, member i in shard i mod procs, starting the shards first if
// need be.
func (f *fleet) startShards(news []*member, from int, tokens []string) error {
	for len(f.shards) < f.procs {
		s, err := startShard(len(f.shards), f.procs, f.memLimit, f.warn)
		if err != nil {
			return fmt.Errorf("agent shard: %w", err)
		}
		f.shards = append(f.shards, s)
	}
	for i, m := range news {
		id := from + i
		if err := f.shards[id%f.procs].start(m, id, tokens[i], f.addr, f.serverCA, f.kubeCopy); err != nil {
			return err
		}
		f.members = append(f.members, m)
	}
	return nil
}

// tail is m's last log records.
func (m *member) tail() []string {
	if m.shard != nil {
		ev, err := m.shard.call(shardCmd{Op: "tail", ID: m.id})
		if err != nil {
			return []string{err.Error()}
		}
		return ev.Tail
	}
	return m.log.tail()
}

// agentsCPU is the agents' CPU time so far: this process's and its
// shards'.
func (f *fleet) agentsCPU() time.Duration {
	t := cpuTime(os.Getpid())
	for _, s := range f.shards {
		t += cpuTime(s.pid())
	}
	return t
}

// gcStats is the agents' processes' collectors: this process's, or with
// shards theirs (this process then holds no agent).
func (f *fleet) gcStats() gcStats {
	if len(f.shards) == 0 {
		return readGCStats()
	}
	var g gcStats
	for _, s := range f.shards {
		if ev, err := s.call(shardCmd{Op: "stats"}); err == nil {
			g = g.add(ev.GC)
		}
	}
	return g
}

// stopMembers ends the agents of ms and closes their connections; their
// clusters stay registered.
func (f *fleet) stopMembers(ms []*member) {
	byShard := map[*shardProc][]int{}
	for _, m := range ms {
		if m.shard != nil {
			byShard[m.shard] = append(byShard[m.shard], m.id)
		} else {
			m.cancel()
		}
	}
	for s, ids := range byShard {
		if _, err := s.call(shardCmd{Op: "stop", IDs: ids}); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	for _, m := range ms {
		if m.shard == nil {
			<-m.done
			m.a.Close()
			m.a = nil
		}
	}
}

// stop ends every agent and closes its connection; again, it does nothing.
func (f *fleet) stop() {
	if f.stopped {
		return
	}
	f.stopped = true
	for _, m := range f.members {
		if m.shard == nil {
			m.cancel()
		}
	}
	for _, s := range f.shards {
		s.close()
	}
	for _, m := range f.members {
		if m.shard == nil {
			<-m.done
			if m.a != nil {
				m.a.Close()
			}
		}
	}
}

// waitAll waits until every member in ms has written its Secret at or
// after since in a way pred accepts, and returns for each the time of that
// write less since (or since the zero time: the write times themselves
// are then meaningless and only the wait matters).
func (f *fleet) waitAll(ctx context.Context, since time.Time, ms []*member, pred func(applied) bool, timeout time.Duration) ([]time.Duration, error) {
	if ms == nil {
		ms = f.members
	}
	lat := make([]time.Duration, 0, len(ms))
	pending := append([]*member(nil), ms...)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		rest := pending[:0]
		for _, m := range pending {
			if at, ok := m.rec.first(since, pred); ok {
				lat = append(lat, at.Sub(since))
			} else {
				rest = append(rest, m)
			}
		}
		pending = rest
		if len(pending) == 0 {
			return lat, nil
		}
		select {
		case <-ctx.Done():
			return lat, ctx.Err()
		case <-deadline.C:
			last, _ := pending[0].rec.last()
			for _, m := range pending[:min(3, len(pending))] {
				fmt.Fprintf(os.Stderr, "last log records of agent %s, which did not apply:\n  %s\n", m.name, strings.Join(m.tail(), "\n  "))
			}
			return lat, fmt.Errorf("%d of %d agents did not apply within %s (e.g. %s, last write: %+v)", len(pending), len(ms), timeout, pending[0].name, last)
		case <-f.wake:
		case <-tick.C:
		}
	}
}

// rootsPEM is the trust bundle's roots, for the agents' --server-ca.
func rootsPEM(tb ca.TrustBundle) ([]byte, error) {
	if len(tb.Roots) == 0 {
		return nil, errors.New("the trust bundle has no roots")
	}
	var out []byte
	for _, r := range tb.Roots {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return out, nil
}

// warnLog counts the agents' warnings and errors, by kind, and keeps the
// first few, so that a run shows whether and how the agents struggled
// without printing 1,000 agents' logs.
type warnLog struct {
	mu    sync.Mutex
	count int
	first []string
	kinds map[string]int // warnKind -> count
	// fwd, in an agent shard, takes each warning (kind and line) instead:
	// the bench counts them (shard.go).
	fwd func(kind, msg string)
}

// maxWarnLine bounds a kept warning line: a CRL warning at 1,000 clusters
// names every CA it misses.
const maxWarnLine = 400

// warnKind is what tells warnings apart: level, message and the start of
// the error, with numbers (CRL numbers, ports, serials) blanked out.
func warnKind(r slog.Record) string {
	kind := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "error" {
			return true
		}
		msg := []rune(a.Value.String())
		var b strings.Builder
		for i, c := range msg {
			if i >= 90 {
				b.WriteString("...")
				break
			}
			if unicode.IsDigit(c) {
				c = '#'
			}
			b.WriteRune(c)
		}
		kind += ": " + b.String()
		return false
	})
	return kind
}

// topKinds returns the n most frequent kinds, most frequent first.
func (w *warnLog) topKinds(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	kinds := make([]string, 0, len(w.kinds))
	for k := range w.kinds {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if w.kinds[kinds[i]] != w.kinds[kinds[j]] {
			return w.kinds[kinds[i]] > w.kinds[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	var out []string
	for _, k := range kinds[:min(n, len(kinds))] {
		out = append(out, fmt.Sprintf("%6d  %s", w.kinds[k], k))
	}
	return out
}

func (w *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnLog) Handle(_ context.Context, r slog.Record) error {
	msg := func() string {
		msg := r.Level.String() + " " + r.Message
		r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
		if len(msg) > maxWarnLine {
			msg = msg[:maxWarnLine] + "..."
		}
		return msg
	}
	if w.fwd != nil {
		w.fwd(warnKind(r), msg())
		return nil
	}
	w.mu.Lock()
	keep := len(w.first) < 5
	w.mu.Unlock()
	line := ""
	if keep {
		line = msg()
	}
	w.add(warnKind(r), line)
	return nil
}

// add counts one warning of kind, and keeps its line (when not "") if
// fewer than five are kept.
func (w *warnLog) add(kind, line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.count++
	if w.kinds == nil {
		w.kinds = map[string]int{}
	}
	w.kinds[kind]++
	if len(w.first) < 5 && line != "" {
		w.first = append(w.first, line)
	}
}

func (w *warnLog) WithAttrs(attrs []slog.Attr) slog.Handler { return &warnAttrs{w: w, attrs: attrs} }
func (w *warnLog) WithGroup(string) slog.Handler            { return w }

// warnAttrs carries With attributes (the cluster name) into warnLog.
type warnAttrs struct {
	w     *warnLog
	attrs []slog.Attr
}

func (h *warnAttrs) Enabled(ctx context.Context, l slog.Level) bool { return h.w.Enabled(ctx, l) }
func (h *warnAttrs) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(h.attrs...)
	return h.w.Handle(ctx, r)
}
func (h *warnAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &warnAttrs{w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}
func (h *warnAttrs) WithGroup(string) slog.Handler { return h }

func (w *warnLog) snapshot() (int, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count, append([]string(nil), w.first...)
}

// secretIO is how many times the fleet's agents read and wrote their
// cacerts Secrets so far (their clusters' APIs count them).
func (f *fleet) secretIO() (reads, writes int) {
	for _, m := range f.members {
		if m.kube != nil {
			reads += m.kube.SecretGets()
			writes += m.kube.SecretWrites()
		}
	}
	for _, s := range f.shards {
		if ev, err := s.call(shardCmd{Op: "stats"}); err == nil {
			reads += ev.Reads
			writes += ev.Writes
		}
	}
	return reads, writes
}
