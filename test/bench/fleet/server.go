package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/meshroot/meshroot/api/adminclient"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server"
)

// serveProc is `meshroot serve` running as its own process, so that its
// RSS is its own and not the in-process agents'.
type serveProc struct {
	certsIssued atomic.Int64 // "server certificate issued" lines in its log
	cmd         *exec.Cmd
	socket      string
	issuerAddr  string
	exited      chan error
	conn        *grpc.ClientConn
	admin       ca.Admin
}

// startServe runs bin at dir with a fresh data dir, on loopback ports, and
// connects to its admin socket (the CLI's path: peer credentials on a
// unix socket, the server decides who acts).
func startServe(bin, dir string, env []string, extra ...string) (*serveProc, error) {
	s := &serveProc{socket: filepath.Join(dir, "admin.sock"), exited: make(chan error, 1)}
	args := append([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--insecure-plaintext-key",
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "127.0.0.1:0",
		"--socket", s.socket, "--san", "127.0.0.1"}, extra...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // it dies with the bench
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Env = append(s.cmd.Env, env...)
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	started := make(chan string, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Bytes()
			logf.Write(append(line, '\n'))
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "server certificate issued" {
				s.certsIssued.Add(1)
			}
			if rec["msg"] == "meshroot server starting" {
				addr, _ := rec["issuer"].(string)
				once.Do(func() { started <- addr })
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() { s.exited <- s.cmd.Wait(); pw.Close() }()
	select {
	case s.issuerAddr = <-started:
	case err := <-s.exited:
		return nil, fmt.Errorf("meshroot serve exited: %v (log: %s)", err, filepath.Join(dir, "serve.log"))
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("meshroot serve did not start in 30 s (log: %s)", filepath.Join(dir, "serve.log"))
	}
	s.conn, err = grpc.NewClient("unix:"+s.socket, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.admin = adminclient.New(s.conn).Admin()
	return s, nil
}

func (s *serveProc) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM and waits (SIGKILL after 15 s).
func (s *serveProc) stop() {
	if s.conn != nil {
		s.conn.Close()
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// memStatus is a process's resident memory, from /proc/PID/status.
type memStatus struct {
	rss, hwm   int64 // bytes: VmRSS, VmHWM (peak)
	file, anon int64 // bytes: RssFile (the mapped binary, mostly), RssAnon
	threads    int
	fds        int // open file descriptors (connections among them)
}

func readMem(pid int) (memStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	defer f.Close()
	var m memStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "VmHWM:":
			m.hwm = kb << 10
		case "RssFile:":
			m.file = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		case "Threads:":
			m.threads = int(kb)
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		m.fds = len(fds)
	}
	return m, sc.Err()
}

// settledMem waits d (the process idle), then reads its memory.
func settledMem(ctx context.Context, pid int, d time.Duration) (memStatus, error) {
	select {
	case <-ctx.Done():
		return memStatus{}, ctx.Err()
	case <-time.After(d):
	}
	return readMem(pid)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
func mb(b int64) float64  { return float64(b) / 1e6 }
