package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
)

// Agents as processes (-agent-procs P > 1): the fleet's agents run in P
// child processes of this bench (the same binary, -agent-shard), each
// holding every P-th agent. A real agent is a process of its own, whose
// collector marks one cluster's state; 1,000 agents in one process share
// one heap of gigabytes, and its one collection in a dozen changes falls
// on two or three of them at once. In P processes the same marking is
// spread over P smaller heaps, as it is over a real fleet's processes; the
// agents' CPU figures add up the children's.
//
// The bench speaks to a shard in JSON lines: commands on its stdin
// (shardCmd), events and replies on its stdout (shardEvent). Each event
// carries the time the shard saw it (Unix nanoseconds of the one clock
// the processes share), so that the pipe's delay is not in any latency.

// shardChild is the -agent-shard flag: run as a shard of agents.
var shardChild bool

// shardCmd is one command to a shard.
type shardCmd struct {
	Op       string `json:"op"` // start, stop, stats, tail, cpu-start, cpu-stop, heap
	Req      uint64 `json:"req"`
	ID       int    `json:"id,omitempty"`  // start, tail: the member
	IDs      []int  `json:"ids,omitempty"` // stop
	Name     string `json:"name,omitempty"`
	Token    string `json:"token,omitempty"`
	Server   string `json:"server,omitempty"`
	ServerCA []byte `json:"server_ca,omitempty"`
	KubeCopy bool   `json:"kube_copy,omitempty"`
	Path     string `json:"path,omitempty"` // cpu-start, heap: the profile's file
}

// shardEvent is one line from a shard: an agent's write of its Secret
// (applied), a bundle its watch delivered (received), a warning it logged
// (warn), or the reply to a command (reply).
type shardEvent struct {
	Ev     string   `json:"ev"`
	Req    uint64   `json:"req,omitempty"`
	ID     int      `json:"id,omitempty"`
	At     int64    `json:"at,omitempty"`
	Seq    uint64   `json:"seq,omitempty"`
	Root   string   `json:"root,omitempty"`
	Roots  int      `json:"roots,omitempty"`
	Kind   string   `json:"kind,omitempty"`
	Msg    string   `json:"msg,omitempty"`
	Err    string   `json:"err,omitempty"`
	Reads  int      `json:"reads,omitempty"`
	Writes int      `json:"writes,omitempty"`
	GC     gcWire   `json:"gc"`
	Tail   []string `json:"tail,omitempty"`
}

// gcWire is gcStats on the wire.
type gcWire struct {
	Cycles uint64 `json:"cycles,omitempty"`
	CPU    int64  `json:"cpu,omitempty"`
	Alloc  uint64 `json:"alloc,omitempty"`
	Live   uint64 `json:"live,omitempty"`
}

func (g gcStats) wire() gcWire {
	return gcWire{Cycles: g.cycles, CPU: int64(g.cpu), Alloc: g.alloc, Live: g.live}
}

// add sums two processes' readings (live included: the heaps are apart).
func (g gcStats) add(w gcWire) gcStats {
	return gcStats{cycles: g.cycles + w.Cycles, cpu: g.cpu + time.Duration(w.CPU), alloc: g.alloc + w.Alloc, live: g.live + w.Live}
}

// shardProc is the bench's side of one shard.
type shardProc struct {
	index   int
	cmd     *exec.Cmd
	in      io.WriteCloser
	wmu     sync.Mutex // serialises writes to in
	warn    *warnLog
	mu      sync.Mutex
	members map[int]*member
	pending map[uint64]chan shardEvent
	next    uint64
	exited  chan struct{}
	waitErr error
}

// shardMaxProcs is each of n shards' GOMAXPROCS: the machine's CPUs
// shared out, at least one. With more Ps than cores in all, a shard's
// idle Ps run its collector's idle mark workers on cores another shard's
// agents wait for: 8 shards of GOMAXPROCS 2 on two cores took 1.9x the
// agents' CPU per change of one process (docs/performance.md).
func shardMaxProcs(n int) int { return max(1, runtime.NumCPU()/n) }

// startShard starts shard index of n, with its share of memLimit and of
// the CPUs.
func startShard(index, n int, memLimit int64, warn *warnLog) (*shardProc, error) {
	env := []string{"GOMAXPROCS=" + strconv.Itoa(shardMaxProcs(n))}
	if memLimit > 0 {
		env = append(env, "GOMEMLIMIT="+strconv.FormatInt(memLimit/int64(n), 10))
	}
	cmd, in, out, err := startChild(env, "-agent-shard")
	if err != nil {
		return nil, err
	}
	s := &shardProc{index: index, cmd: cmd, in: in, warn: warn, members: map[int]*member{},
		pending: map[uint64]chan shardEvent{}, exited: make(chan struct{})}
	go s.read(out)
	return s, nil
}

func (s *shardProc) pid() int { return s.cmd.Process.Pid }

// read dispatches the shard's lines until it exits.
func (s *shardProc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev shardEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			fmt.Fprintf(os.Stderr, "agent shard %d: %q: %v\n", s.index, sc.Text(), err)
			continue
		}
		s.mu.Lock()
		m := s.members[ev.ID]
		reply := s.pending[ev.Req]
		if ev.Ev == "reply" {
			delete(s.pending, ev.Req)
		}
		s.mu.Unlock()
		switch ev.Ev {
		case "applied":
			if m != nil {
				m.rec.put(applied{at: time.Unix(0, ev.At), sequence: ev.Seq, rootID: ev.Root, roots: ev.Roots})
			}
		case "received":
			if m != nil {
				m.rec.receive(time.Unix(0, ev.At), ev.Seq)
			}
		case "warn":
			s.warn.add(ev.Kind, ev.Msg)
		case "reply":
			if reply != nil {
				reply <- ev
			}
		}
	}
	s.waitErr = s.cmd.Wait()
	close(s.exited)
}

// call sends c and waits for its reply (an error when the reply says so,
// or the shard exits, or two minutes pass).
func (s *shardProc) call(c shardCmd) (shardEvent, error) {
	ch := make(chan shardEvent, 1)
	s.mu.Lock()
	s.next++
	c.Req = s.next
	s.pending[c.Req] = ch
	s.mu.Unlock()
	b, err := json.Marshal(c)
	if err != nil {
		return shardEvent{}, err
	}
	s.wmu.Lock()
	_, err = s.in.Write(append(b, '\n'))
	s.wmu.Unlock()
	if err != nil {
		return shardEvent{}, fmt.Errorf("agent shard %d: %s: %w", s.index, c.Op, err)
	}
	select {
	case ev := <-ch:
		if ev.Err != "" {
			return ev, fmt.Errorf("agent shard %d: %s: %s", s.index, c.Op, ev.Err)
		}
		return ev, nil
	case <-s.exited:
		return shardEvent{}, fmt.Errorf("agent shard %d exited (%v) before answering %s", s.index, s.waitErr, c.Op)
	case <-time.After(2 * time.Minute):
		return shardEvent{}, fmt.Errorf("agent shard %d did not answer %s within 2 min", s.index, c.Op)
	}
}

// start starts m's agent in the shard.
func (s *shardProc) start(m *member, id int, token, server string, serverCA []byte, kubeCopy bool) error {
	s.mu.Lock()
	s.members[id] = m
	s.mu.Unlock()
	m.shard, m.id = s, id
	_, err := s.call(shardCmd{Op: "start", ID: id, Name: m.name, Token: token, Server: server, ServerCA: serverCA, KubeCopy: kubeCopy})
	return err
}

// close ends the shard's agents and the shard (stdin closed), killing it
// after 30 s.
func (s *shardProc) close() {
	s.in.Close()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// eventWriter writes a shard's events, one JSON line each, flushed at
// once (the bench waits on them).
type eventWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (e *eventWriter) emit(ev shardEvent) {
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Write(b)
	e.w.WriteByte('\n')
	e.w.Flush()
}

// shardAgent is one agent in a shard.
type shardAgent struct {
	a      *agent.Agent
	kube   *kubefake.Clientset
	log    *memberLog
	cancel context.CancelFunc
	done   chan struct{}
}

// runAgentShard is the child: it runs agents as the bench's commands say,
// until its stdin closes.
func runAgentShard() error {
	out := &eventWriter{w: bufio.NewWriterSize(os.Stdout, 64<<10)}
	warn := &warnLog{fwd: func(kind, msg string) { out.emit(shardEvent{Ev: "warn", Kind: kind, Msg: msg}) }}
	agents := map[int]*shardAgent{}
	ctx := context.Background()
	stop := func(ids []int) {
		for _, id := range ids {
			if a := agents[id]; a != nil {
				a.cancel()
			}
		}
		for _, id := range ids {
			if a := agents[id]; a != nil {
				<-a.done
				a.a.Close()
				delete(agents, id)
			}
		}
	}
	defer func() {
		ids := make([]int, 0, len(agents))
		for id := range agents {
			ids = append(ids, id)
		}
		stop(ids)
	}()
	var prof *os.File
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	for in.Scan() {
		var c shardCmd
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			return fmt.Errorf("agent shard: bad command %q: %w", in.Text(), err)
		}
		rep := shardEvent{Ev: "reply", Req: c.Req}
		switch c.Op {
		case "start":
			id := c.ID
			rec := &recorder{fwd: func(ev shardEvent) { ev.ID = id; out.emit(ev) }}
			sa := &shardAgent{kube: newRecordingKube(rec, c.KubeCopy), log: &memberLog{warn: warn, rec: rec}}
			var err error
			if sa.a, sa.cancel, sa.done, err = runAgent(ctx, c.Server, c.ServerCA, c.Name, c.Token, sa.kube, sa.log); err != nil {
				rep.Err = err.Error()
				break
			}
			agents[id] = sa
		case "stop":
			stop(c.IDs)
		case "stats":
			for _, a := range agents {
				rep.Reads += a.kube.SecretGets()
				rep.Writes += a.kube.SecretWrites()
			}
			rep.GC = readGCStats().wire()
		case "tail":
			if a := agents[c.ID]; a != nil {
				rep.Tail = a.log.tail()
			}
		case "cpu-start":
			f, err := os.Create(c.Path)
			if err == nil {
				if err = pprof.StartCPUProfile(f); err != nil {
					f.Close()
				} else {
					prof = f
				}
			}
			if err != nil {
				rep.Err = err.Error()
			}
		case "cpu-stop":
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
				prof = nil
			}
		case "heap":
			runtime.GC()
			f, err := os.Create(c.Path)
			if err == nil {
				err = pprof.WriteHeapProfile(f)
				f.Close()
			}
			if err != nil {
				rep.Err = err.Error()
			}
		default:
			rep.Err = "unknown command " + strconv.Quote(c.Op)
		}
		out.emit(rep)
	}
	if err := in.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// shardProfile is the name of shard i's copy of profile name.
func shardProfile(dir, name string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("bench-shard%d-%s", i, name))
}
