package kube

import (
	"net"
	"os"
	"testing"
)

// TestServerStartPortTaken: the harness's server starts although the gRPC
// port freePorts picked was taken before the server bound it (as another
// process's outgoing connection can take it), on other ports.
func TestServerStartPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	sockDir, err := os.MkdirTemp("", "mr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	s := newServer(t, "127.0.0.1", []string{port, freePorts(t, 1)[0]}, sockDir, t.TempDir())
	s.start()
	defer s.stop()
	if s.addr == taken.Addr().String() {
		t.Fatalf("server reported started on %s, which another listener holds", s.addr)
	}
	if s.starts != 1 {
		t.Errorf("starts = %d after a retry on new ports, want 1 (restarts count from the start that succeeded)", s.starts)
	}
	if err := httpOK("http://" + s.httpAddr + "/healthz"); err != nil {
		t.Errorf("server on its new ports: %v", err)
	}
}
