package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/server/fleetpage"
)

// Without credentials the fleet page is never served on an address other
// hosts reach: serve refuses to start, by flag or by config key, and says
// how to serve it over admin mTLS; the page over admin mTLS without the
// remote admin listener is refused too.
func TestServeFleetPageRefusesNonLoopback(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "mr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "meshroot.yaml")
	if err := os.WriteFile(cfg, []byte("fleetPage: true\nhttpListen: \":0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "admin.sock"), "--insecure-plaintext-key",
		"--listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off"}
	for _, args := range [][]string{
		{"--fleet-page", "--http-listen", "0.0.0.0:0"},
		{"--dev", "--http-listen", ":0"},
		{"--config", cfg},
	} {
		r := cli(t, append(base, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "remote access needs admin mTLS") || !strings.Contains(r.stderr, "fleetPageListen/--fleet-page-listen with adminListen/--admin-listen") {
			t.Errorf("serve %v: exit %d, %s", args, r.code, r.stderr)
		}
	}
	for _, args := range [][]string{
		{"--fleet-page-listen", "127.0.0.1:0"},
		{"--dev", "--fleet-page-listen", "0.0.0.0:0"},
	} {
		r := cli(t, append(base, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "set adminListen/--admin-listen too") {
			t.Errorf("serve %v: exit %d, %s", args, r.code, r.stderr)
		}
	}
}

// TestServeDevFleetPageFolderAgent is the newcomer's path: `serve --dev`
// prints the fleet page's address and an agent command writing to a
// folder; running that command (no Kubernetes) makes cluster "dev" appear
// on the page, healthy, with cacerts in the folder.
func TestServeDevFleetPageFolderAgent(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "mr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var logs syncBuffer
	cmd := newRootCmd()
	cmd.SetArgs([]string{"serve", "--dev", "--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "admin.sock"),
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off"})
	cmd.SetErr(&logs)
	cmd.SetOut(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	re := regexp.MustCompile(`fleet page: +(http://\S+/fleet)[\s\S]*?\n  (meshroot agent --server [^\n]*\\\n[^\n]*--out \S+)`)
	var m []string
	for deadline := time.Now().Add(30 * time.Second); m == nil; time.Sleep(50 * time.Millisecond) {
		if m = re.FindStringSubmatch(logs.String()); m == nil && time.Now().After(deadline) {
			t.Fatalf("the dev banner has no fleet page address and folder agent command:\n%s", logs.String())
		}
	}
	pageURL := m[1]
	args := strings.Fields(strings.ReplaceAll(m[2], "\\\n", " "))[1:]
	out := filepath.Join(dir, "dev-cacerts")
	if args[len(args)-2] != "--out" {
		t.Fatalf("agent command %v does not end in --out DIR", args)
	}
	args[len(args)-1] = out

	fleet := func() fleetpage.Fleet {
		t.Helper()
		resp, err := http.Get(pageURL + ".json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var f fleetpage.Fleet
		if err := json.NewDecoder(resp.Body).Decode(&f); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s.json: %d %v", pageURL, resp.StatusCode, err)
		}
		return f
	}
	if f := fleet(); len(f.Clusters) != 1 || f.Clusters[0].Name != "dev" || f.Clusters[0].State != fleetpage.StateNotSeen {
		t.Fatalf("before the agent ran: %+v", f.Clusters)
	}

	agentCmd := newRootCmd()
	agentCmd.SetArgs(args)
	var agentLogs syncBuffer
	agentCmd.SetErr(&agentLogs)
	agentCmd.SetOut(&agentLogs)
	actx, acancel := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	go func() { adone <- agentCmd.ExecuteContext(actx) }()
	defer func() {
		acancel()
		if err := <-adone; err != nil {
			t.Errorf("agent: %v\n%s", err, agentLogs.String())
		}
	}()
	var f fleetpage.Fleet
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if f = fleet(); len(f.Clusters) == 1 && f.Clusters[0].State == fleetpage.StateHealthy && f.Clusters[0].BundleCurrent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster dev never became healthy on the page: %+v\nagent:\n%s", f.Clusters, agentLogs.String())
		}
	}
	c := f.Clusters[0]
	if c.IntermediateSource != "reported" || !c.BundleCurrent || c.DaysLeft == nil || c.LastContact.IsZero() {
		t.Errorf("dev on the page: %+v", c)
	}
	for _, name := range []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s in the output folder: %v %v", name, fi, err)
		}
	}
	certs, err := os.ReadFile(filepath.Join(out, "ca-cert.pem"))
	if err != nil || !strings.Contains(string(certs), "BEGIN CERTIFICATE") {
		t.Errorf("ca-cert.pem: %v", err)
	}
}
