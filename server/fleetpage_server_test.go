package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/server/fleetpage"
	"github.com/meshroot/meshroot/store/sqlite"
)

// TestFleetPageOnHTTPListener serves the fleet page next to /metrics.
func TestFleetPageOnHTTPListener(t *testing.T) {

	ts := startServer(t, func(c *server.ServerConfig) {
		p, err := fleetpage.New(fleetpage.Options{Reader: c.Service, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		c.FleetPage = p
	})
	ts.bootstrap(t)
	for path, want := range map[string]string{
		"/fleet": `data-cluster="east"`, "/fleet.json": `"name": "west"`, "/fleet/fleet.css": "#expiry-calendar", "/metrics": "meshroot_",
	} {
		resp, err := http.Get("http://" + ts.srv.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body without %q", path, resp.StatusCode, want)
		}
	}
}

// TestFleetPageRefusesNonLoopbackListener: until admin mTLS guards it, the
// page is never served on an address other hosts can reach.
func TestFleetPageRefusesNonLoopbackListener(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	page, err := fleetpage.New(fleetpage.Options{Reader: svc})
	if err != nil {
		t.Fatal(err)
	}
	for i, addr := range []string{"0.0.0.0:0", ":0"} {
		srv, err := server.NewServer(server.ServerConfig{
			Service: svc, Store: st, Listen: "127.0.0.1:0", HTTPListen: addr, AdminSocket: filepath.Join(dir, "run", fmt.Sprintf("admin%d.sock", i)),
			Log: slog.New(slog.DiscardHandler), FleetPage: page,
		})
		if err == nil {
			t.Errorf("HTTP listener %s: the server was built with the fleet page on it", addr)
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_ = srv.Run(ctx) // releases its listeners
		} else if !strings.Contains(err.Error(), "remote access needs admin mTLS") {
			t.Errorf("HTTP listener %s: %v", addr, err)
		}
	}
}
