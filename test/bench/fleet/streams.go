package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// The stream fan-out isolates the server's part of a fan-out. With 1,000
// in-process agents, every agent's own work at each change (parse the
// bundle, render and write a ca-crl.pem of the whole fleet's CRLs, report)
// runs on the same two cores as the server, so the agents' p99 measures
// this machine's total CPU, not what a fleet would see, where each agent
// runs on its own cluster. Here the agents are stopped, and one child
// process of this bench holds N watch streams (each its own TCP and TLS
// connection, asking for CRL deltas as agents do) and only receives and
// decodes: from the admin call to every stream having the new bundle.

// streamsChild is the child's flag: how many watch streams to hold.
var streamsChild = struct {
	n        int
	addr, ca string
}{}

// streamResult is what one stream fan-out found.
type streamResult struct {
	streams  int
	changes  int
	lat      []time.Duration // per stream per change: admin call start -> received
	worst    []time.Duration
	cpu      time.Duration // server CPU over the measurement
	childCPU time.Duration // the watchers' process
	setup    time.Duration // opening the streams, to every first message
}

// streamFanout starts the child with n streams and makes 2*rounds bundle
// changes, as fanout does.
func streamFanout(ctx context.Context, srv *serveProc, dir string, roots []byte, n, rounds int) (streamResult, error) {
	res := streamResult{streams: n}
	caFile := filepath.Join(dir, "streams-ca.pem")
	if err := os.WriteFile(caFile, roots, 0o600); err != nil {
		return res, err
	}
	t := time.Now()
	cmd, in, outPipe, err := startChild(nil, "-streams-child", strconv.Itoa(n), "-streams-addr", srv.issuerAddr, "-streams-ca", caFile)
	if err != nil {
		return res, err
	}
	defer func() {
		in.Close()
		_ = cmd.Wait()
	}()
	out := bufio.NewReader(outPipe)
	if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		return res, fmt.Errorf("stream child: %q %v", line, err)
	}
	res.setup = time.Since(t)
	progress("%d watch streams open in %s", n, res.setup.Round(time.Millisecond))
	cpu0, child0 := cpuTime(srv.pid()), cpuTime(cmd.Process.Pid)
	for range rounds {
		for _, step := range bundleChanges(ctx, srv) {
			tb, err := srv.admin.TrustBundle(ctx)
			if err != nil {
				return res, err
			}
			want := tb.Sequence + 1
			t0 := time.Now()
			if err := step.do(); err != nil {
				return res, fmt.Errorf("%s: %w", step.name, err)
			}
			if _, err := fmt.Fprintf(in, "wait %d\n", want); err != nil {
				return res, err
			}
			line, err := out.ReadString('\n')
			if err != nil {
				return res, fmt.Errorf("stream child: %w", err)
			}
			var ans waitAnswer
			if err := json.Unmarshal([]byte(line), &ans); err != nil {
				return res, fmt.Errorf("stream child: %q: %w", line, err)
			}
			if ans.Err != "" {
				return res, fmt.Errorf("after %s: %s", step.name, ans.Err)
			}
			var worst time.Duration
			for _, at := range ans.At {
				d := time.Duration(at - t0.UnixNano())
				res.lat = append(res.lat, d)
				worst = max(worst, d)
			}
			res.worst = append(res.worst, worst)
			res.changes++
		}
	}
	res.cpu = cpuTime(srv.pid()) - cpu0
	res.childCPU = cpuTime(cmd.Process.Pid) - child0
	return res, nil
}

// waitAnswer is the child's answer to "wait SEQ": when each stream first
// received a bundle with at least SEQ (Unix nanoseconds), or why not.
type waitAnswer struct {
	At  []int64 `json:"at"`
	Err string  `json:"err,omitempty"`
}

// receipts is what one stream received: sequence and time.
type receipts struct {
	mu  sync.Mutex
	got []receipt
}

func (r *receipts) add(seq uint64, at time.Time) {
	r.mu.Lock()
	r.got = append(r.got, receipt{at: at, sequence: seq})
	r.mu.Unlock()
}

func (r *receipts) first(seq uint64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.got {
		if g.sequence >= seq {
			return g.at, true
		}
	}
	return time.Time{}, false
}

// runStreamsChild is the child: it opens the streams, says "ready" once
// each has its first message, then answers "wait SEQ" lines until stdin
// closes.
func runStreamsChild() error {
	roots, err := os.ReadFile(streamsChild.ca)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		return errors.New("no certificates in " + streamsChild.ca)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := streamsChild.n
	recs := make([]*receipts, n)
	firsts := make(chan error, n)
	sem := make(chan struct{}, 16) // handshakes at a time
	for i := range recs {
		recs[i] = &receipts{}
		go func(r *receipts) {
			sem <- struct{}{}
			conn, err := grpc.NewClient(streamsChild.addr,
				grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})),
				grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 25 * time.Second, Timeout: 15 * time.Second, PermitWithoutStream: true}))
			if err != nil {
				<-sem
				firsts <- err
				return
			}
			defer conn.Close()
			st, err := meshrootv1.NewIssuerClient(conn).WatchTrustBundle(ctx, &meshrootv1.WatchTrustBundleRequest{CrlDeltas: true}, grpc.MaxCallRecvMsgSize(256<<20))
			first := true
			for err == nil {
				var b *meshrootv1.TrustBundle
				if b, err = st.Recv(); err == nil {
					r.add(b.GetSequence(), time.Now())
					if first {
						first = false
						<-sem
						firsts <- nil
					}
				}
			}
			if first {
				<-sem
				firsts <- err
			} else if ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "watch stream ended: %v\n", err)
			}
		}(recs[i])
	}
	for range n {
		if err := <-firsts; err != nil {
			return fmt.Errorf("opening a watch stream: %w", err)
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		seq, err := strconv.ParseUint(strings.TrimPrefix(in.Text(), "wait "), 10, 64)
		if err != nil {
			return fmt.Errorf("stream child: bad command %q", in.Text())
		}
		ans := waitAnswer{At: make([]int64, 0, n)}
		deadline := time.Now().Add(2 * time.Minute)
		for i := 0; i < n; {
			if at, ok := recs[i].first(seq); ok {
				ans.At = append(ans.At, at.UnixNano())
				i++
				continue
			}
			if time.Now().After(deadline) {
				ans.Err = fmt.Sprintf("%d of %d streams did not receive sequence %d within 2 min", n-i, n, seq)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := enc.Encode(ans); err != nil {
			return err
		}
	}
	if err := in.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
