package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// leanAgentRSS runs the lean agent binary as its own process in folder
// mode (--out), for a cluster of its own, waits until it has written
// cacerts and has been idle for settle, and returns its memory. With
// prof's address set, the agent serves pprof there (a -tags pprof build),
// and its memory statistics and heap profile are saved after the reading.
func leanAgentRSS(ctx context.Context, bin, dir, addr string, admin ca.Admin, roots []byte, settle time.Duration, prof *profiler) (memStatus, error) {
	const name = "lean-agent"
	if _, err := admin.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
		return memStatus{}, err
	}
	defer admin.RemoveCluster(context.WithoutCancel(ctx), name) //nolint:errcheck
	tok, err := admin.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: name, TTL: time.Hour})
	if err != nil {
		return memStatus{}, err
	}
	caFile := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(caFile, roots, 0o600); err != nil {
		return memStatus{}, err
	}
	out := filepath.Join(dir, "lean-agent-out")
	logf, err := os.Create(filepath.Join(dir, "lean-agent.log"))
	if err != nil {
		return memStatus{}, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--server", addr, "--server-ca", caFile, "--cluster", name, "--out", out)
	cmd.Env = append(os.Environ(), "MESHROOT_JOIN_TOKEN="+tok.Token)
	if prof.addr != "" {
		cmd.Env = append(cmd.Env, "MESHROOT_PPROF_LISTEN="+prof.addr)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return memStatus{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(out, "root-cert.pem")); err == nil {
			break
		}
		select {
		case err := <-exited:
			return memStatus{}, fmt.Errorf("%s exited: %v (log %s)", bin, err, logf.Name())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return memStatus{}, fmt.Errorf("%s wrote no cacerts into %s in 2 min (log %s)", bin, out, logf.Name())
		}
	}
	m, err := settledMem(ctx, cmd.Process.Pid, settle)
	if err == nil && prof.addr != "" {
		// After the reading: the heap profile's collection changes it.
		prof.fetch("/debug/pprof/heap?debug=1", "agent-memstats.txt")
		prof.fetch("/debug/pprof/heap?gc=1", "agent-heap.pprof")
	}
	return m, err
}
