package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSlowTraceSavesOnlySlowChanges(t *testing.T) {
	dir := t.TempDir()
	serverTrace := []byte("server window")
	var asked int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked++
		if r.URL.Path != "/debug/flight" {
			http.NotFound(w, r)
			return
		}
		w.Write(serverTrace)
	}))
	defer srv.Close()
	s, err := startSlowTrace(time.Second, dir, strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()

	s.changeDone("root prepare", 1, false, 999*time.Millisecond)
	if files, _ := os.ReadDir(dir); len(files) != 0 || asked != 0 || s.saved != 0 {
		t.Fatalf("a change under the threshold saved %d files, asked the server %d times", len(files), asked)
	}
	s.changeDone("rollback", 2, true, time.Second)
	if s.saved != 1 || asked != 1 {
		t.Fatalf("saved %d, asked the server %d times; want 1 and 1", s.saved, asked)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bench-trace-b2b-rollback-02.trace"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("this process's trace does not start with a trace header: %q", b[:min(len(b), 16)])
	}
	if got, err := os.ReadFile(filepath.Join(dir, "server-trace-b2b-rollback-02.trace")); err != nil || !bytes.Equal(got, serverTrace) {
		t.Errorf("server trace = %q, %v; want the server's window", got, err)
	}
}

func TestSlowTraceServerWithoutRecorder(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(http.NotFoundHandler()) // a pprof build without MESHROOT_FLIGHT_RECORDER
	defer srv.Close()
	s, err := startSlowTrace(time.Millisecond, dir, strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	if err := s.save("trace-prepare-01.trace"); err == nil || !strings.Contains(err.Error(), "MESHROOT_FLIGHT_RECORDER") {
		t.Errorf("save = %v; want an error naming MESHROOT_FLIGHT_RECORDER", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "server-trace-prepare-01.trace")); !os.IsNotExist(err) {
		t.Errorf("a server trace file was written for a refused request: %v", err)
	}
}

func TestSlowTraceOff(t *testing.T) {
	s, err := startSlowTrace(0, t.TempDir(), "")
	if s != nil || err != nil {
		t.Fatalf("startSlowTrace(0) = %v, %v; want nil, nil", s, err)
	}
	s.changeDone("root prepare", 1, false, time.Hour) // a nil slowTrace does nothing
	s.stop()
}
