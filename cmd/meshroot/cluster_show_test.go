package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestClusterShow(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)
	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key", dd)
	cliOK(t, "cluster", "add", "east", dd)

	var v struct {
		Name         string          `json:"name"`
		TrustDomain  string          `json:"trust_domain"`
		Auth         map[string]any  `json:"auth"`
		Intermediate json.RawMessage `json:"intermediate"`
	}
	show := func() {
		t.Helper()
		v.Intermediate = nil
		out := cliOK(t, "cluster", "show", "east", "-o", "json", dd).stdout
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("cluster show -o json: %v\n%s", err, out)
		}
	}
	show()
	if v.Name != "east" || v.TrustDomain != testTD || v.Auth["k8s_tokenreview"] != false || string(v.Intermediate) != "null" {
		t.Errorf("cluster show before any issue: %+v, want east in %s, no intermediate", v, testTD)
	}

	out := t.TempDir()
	issued := cliOK(t, "intermediate", "issue", "--cluster", "east", "--out", out, "--insecure-plaintext-key", "-o", "json", dd).stdout
	var in struct {
		Serial string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(issued), &in); err != nil || in.Serial == "" {
		t.Fatalf("intermediate issue -o json: %v\n%s", err, issued)
	}
	show()
	if !strings.Contains(string(v.Intermediate), in.Serial) {
		t.Errorf("cluster show after issue: intermediate %s, want serial %s", v.Intermediate, in.Serial)
	}
	if table := cliOK(t, "cluster", "show", "east", dd).stdout; !strings.Contains(table, "CURRENT INTERMEDIATE:") || !strings.Contains(table, in.Serial) {
		t.Errorf("cluster show (table) does not name the current intermediate %s:\n%s", in.Serial, table)
	}

	if r := cli(t, "cluster", "show", "west", dd); r.code != exitRefused || !strings.Contains(r.stderr, "not registered") {
		t.Errorf("cluster show of an unknown cluster: exit %d, %s", r.code, r.stderr)
	}
	if r := cli(t, "cluster", "show", dd); r.code != exitUsage {
		t.Errorf("cluster show without NAME: exit %d", r.code)
	}
}
