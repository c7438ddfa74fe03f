package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestClusterQuarantineAndRelease: the dry run changes nothing, the
// quarantine revokes and lists, issuance is refused with the reason, list
// and show say quarantined, release lifts it.
func TestClusterQuarantineAndRelease(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)
	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key", dd)
	cliOK(t, "cluster", "add", "west", dd)
	cliOK(t, "cluster", "add", "east", dd)
	issue := func() cliResult {
		return cli(t, "intermediate", "issue", "--cluster", "west", "--out", filepath.Join(t.TempDir(), "w"), "--insecure-plaintext-key", "-o", "json", dd)
	}
	if r := issue(); r.code != exitOK {
		t.Fatal(r.stderr)
	}
	if r := cli(t, "cluster", "quarantine", "west", dd); r.code != exitUsage || !strings.Contains(r.stderr, "--reason") {
		t.Errorf("quarantine without --reason: exit %d %s", r.code, r.stderr)
	}
	dry := cliOK(t, "cluster", "quarantine", "west", "--reason", "leaked", "--dry-run", dd)
	if !strings.Contains(dry.stdout, "dry run") || !strings.Contains(dry.stdout, "revoked: 1") {
		t.Errorf("dry run: %s", dry.stdout)
	}
	if r := issue(); r.code != exitOK {
		t.Fatalf("issue after a dry run: %s", r.stderr)
	}
	var res struct {
		Revoked []string `json:"revoked"`
	}
	out := cliOK(t, "cluster", "quarantine", "west", "--reason", "leaked", "-o", "json", dd)
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil || len(res.Revoked) != 2 {
		t.Fatalf("quarantine -o json: %v %s", err, out.stdout)
	}
	if r := issue(); r.code == exitOK || !strings.Contains(r.stderr, "quarantined") || !strings.Contains(r.stderr, "leaked") {
		t.Errorf("issue for quarantined west: exit %d %s", r.code, r.stderr)
	}
	if l := cliOK(t, "cluster", "list", dd); !strings.Contains(l.stdout, "QUARANTINED") || !strings.Contains(l.stdout, "leaked") {
		t.Errorf("cluster list: %s", l.stdout)
	}
	// Enforcement: east has no agent, so it is pending.
	var list []struct {
		Name       string `json:"name"`
		Quarantine *struct {
			Enforcement struct {
				AppliedBy []string `json:"applied_by"`
				Pending   []struct {
					Cluster string `json:"cluster"`
					Detail  string `json:"detail"`
				} `json:"pending"`
			} `json:"enforcement"`
		} `json:"quarantine"`
	}
	l := cliOK(t, "cluster", "list", "-o", "json", dd)
	if err := json.Unmarshal([]byte(l.stdout), &list); err != nil || len(list) != 2 || list[1].Name != "west" || list[1].Quarantine == nil ||
		len(list[1].Quarantine.Enforcement.Pending) != 1 || list[1].Quarantine.Enforcement.Pending[0].Cluster != "east" ||
		len(list[1].Quarantine.Enforcement.AppliedBy) != 0 {
		t.Errorf("cluster list -o json: %v %s", err, l.stdout)
	}
	if st := cliOK(t, "root", "status", dd); !strings.Contains(st.stdout, "quarantined west since") ||
		!strings.Contains(st.stdout, "applied by none; pending: east (never seen)") {
		t.Errorf("root status: %s", st.stdout)
	}
	if st := cliOK(t, "root", "status", "-o", "json", dd); !strings.Contains(st.stdout, `"quarantines"`) || !strings.Contains(st.stdout, `"pending"`) {
		t.Errorf("root status -o json: %s", st.stdout)
	}
	if s := cliOK(t, "cluster", "show", "west", "-o", "json", dd); !strings.Contains(s.stdout, `"quarantine"`) {
		t.Errorf("cluster show -o json: %s", s.stdout)
	}
	cliOK(t, "cluster", "release", "west", dd)
	if r := issue(); r.code != exitOK {
		t.Errorf("issue after release: %s", r.stderr)
	}
	if l := cliOK(t, "cluster", "list", "-o", "json", dd); strings.Contains(l.stdout, "quarantine") {
		t.Errorf("cluster list after release: %s", l.stdout)
	}
}
