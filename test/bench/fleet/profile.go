package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"
)

// profiler fetches the server's profiles from a meshroot built with
// -tags pprof (MESHROOT_PPROF_LISTEN) and CPU-profiles this process (the
// agents), into dir.
type profiler struct {
	addr   string // the server's pprof listener; "" when off
	dir    string
	shards *fleet // its agent shards are profiled too
	// window is how long change profiles each change (whole seconds).
	window time.Duration
}

// eachShard sends each of the fleet's agent shards op with its copy of
// profile name.
func (p *profiler) eachShard(op, name string) {
	if p.shards == nil {
		return
	}
	for i, s := range p.shards.shards {
		if _, err := s.call(shardCmd{Op: op, Path: shardProfile(p.dir, name, i)}); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}

// heap saves the server's heap profile as name, and this process's (the
// agents') as bench-name.
func (p *profiler) heap(name string) {
	if p == nil || p.addr == "" {
		return
	}
	p.fetch("/debug/pprof/heap?gc=1", name)
	p.eachShard("heap", name)
	runtime.GC()
	f, err := os.Create(filepath.Join(p.dir, "bench-"+name))
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.WriteHeapProfile(f)
}

// cpu starts a server CPU profile of d in the background, and one of this
// process; the returned func waits for both and saves them.
func (p *profiler) cpu(name string, d time.Duration) func() {
	if p == nil || p.addr == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d/time.Second)), "server-"+name)
	}()
	f, err := os.Create(filepath.Join(p.dir, "bench-"+name))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench CPU profile: %v\n", err)
	}
	p.eachShard("cpu-start", name)
	return func() {
		p.eachShard("cpu-stop", name)
		pprof.StopCPUProfile()
		if f != nil {
			f.Close()
		}
		<-done
	}
}

// change CPU-profiles one bundle change, the server and this process (the
// agents), for p.window from now, as name (server-name and bench-name).
// The returned func, called once every agent applied the change, waits
// out the window and saves both.
func (p *profiler) change(name string) func() {
	if p == nil || p.addr == "" {
		return func() {}
	}
	end := time.Now().Add(p.window)
	stop := p.cpu(name, p.window)
	return func() {
		time.Sleep(time.Until(end))
		stop()
	}
}

func (p *profiler) fetch(path, name string) {
	resp, err := http.Get("http://" + p.addr + path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile %s: %v\n", path, err)
		return
	}
	defer resp.Body.Close()
	out := filepath.Join(p.dir, name)
	f, err := os.Create(out)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
	fmt.Fprintf(os.Stderr, "profile saved: %s\n", out)
}

// goroutines saves the goroutine stacks of the server (with -pprof) and of
// this process, for a run that failed: an agent that never applied shows
// where its watch waits, and the server where its stream does.
func (p *profiler) goroutines() {
	if p == nil {
		return
	}
	if p.addr != "" {
		p.fetch("/debug/pprof/goroutine?debug=2", "server-goroutines.txt")
	}
	out := filepath.Join(p.dir, "bench-goroutines.txt")
	f, err := os.Create(out)
	if err != nil {
		return
	}
	defer f.Close()
	if err := pprof.Lookup("goroutine").WriteTo(f, 2); err == nil {
		fmt.Fprintf(os.Stderr, "goroutines saved: %s\n", out)
	}
}
