package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const testTD = "example.org"

// cliResult is one in-process run of the command tree.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

// clearEnv removes every MESHROOT_* variable for the duration of the test
// (restored afterwards), so that the parent's environment cannot leak in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "MESHROOT_") {
			t.Setenv(k, "") // registers the restore
			os.Unsetenv(k)
		}
	}
}

// cli runs the command tree with args as main does, mapping the error to
// an exit code; the error text is appended to stderr.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := newRootCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	err := cmd.Execute()
	code := exitOK
	if err != nil {
		code = exitCode(err)
		stderr.WriteString("meshroot: " + oneLine(err) + "\n")
	}
	return cliResult{args: args, stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// cliOK runs args and fails the test unless they succeed.
func cliOK(t *testing.T, args ...string) cliResult {
	t.Helper()
	r := cli(t, args...)
	if r.code != exitOK {
		t.Fatalf("meshroot %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// dataDir returns a fresh data dir flag.
func dataDir(t *testing.T) string {
	t.Helper()
	return "--data-dir=" + filepath.Join(t.TempDir(), "data")
}

// decodeArray decodes a JSON array of objects and checks that every object
// has exactly the keys want.
func decodeArray(t *testing.T, what, data string, want ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		t.Fatalf("%s -o json is not a JSON array of objects: %v\n%s", what, err, data)
	}
	for i, o := range out {
		for _, k := range want {
			if _, ok := o[k]; !ok {
				t.Errorf("%s -o json: element %d lacks %q: %v", what, i, k, o)
			}
		}
		if len(o) != len(want) {
			t.Errorf("%s -o json: element %d has fields %v, want exactly %v", what, i, mapKeys(o), want)
		}
	}
	return out
}

func mapKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestJSONLists(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)

	// A data dir without state is refused by read-only commands, so that
	// a mistyped --data-dir is not taken for an empty one.
	for _, what := range [][]string{{"root", "list"}, {"cluster", "list"}, {"intermediate", "list"}} {
		r := cli(t, append(what, dd, "-o", "json")...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "holds no meshroot state") {
			t.Errorf("%s on a missing data dir: exit %d, %s", strings.Join(what, " "), r.code, r.stderr)
		}
	}

	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key", dd)
	// Empty lists are [] (not null), so that scripts can iterate them.
	for _, what := range [][]string{{"cluster", "list"}, {"intermediate", "list"}} {
		r := cliOK(t, append(what, dd, "-o", "json")...)
		if strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("%s -o json with nothing registered: %q, want []", strings.Join(what, " "), r.stdout)
		}
	}
	cliOK(t, "cluster", "add", "east", dd)
	cliOK(t, "cluster", "add", "west", dd)
	issued := cliOK(t, "intermediate", "issue", "--cluster", "east", "--out", filepath.Join(t.TempDir(), "east"), "--insecure-plaintext-key", "-o", "json", dd)
	var iss struct {
		Serial string   `json:"serial"`
		Files  []string `json:"files"`
	}
	if err := json.Unmarshal([]byte(issued.stdout), &iss); err != nil || iss.Serial == "" {
		t.Fatalf("intermediate issue -o json: %v\n%s", err, issued.stdout)
	}
	if strings.Join(iss.Files, ",") != "ca-cert.pem,ca-key.pem,cert-chain.pem,root-cert.pem" {
		t.Errorf("intermediate issue -o json files: %v", iss.Files)
	}

	roots := decodeArray(t, "root list", cliOK(t, "root", "list", "-o", "json", dd).stdout,
		"id", "trust_domain", "state", "key_ref", "subject", "chain_length", "not_after", "created_at")
	if len(roots) != 1 {
		t.Fatalf("root list: %d roots, want 1", len(roots))
	}
	root := roots[0]
	if root["trust_domain"] != testTD || root["state"] != "active" || root["chain_length"] != float64(1) {
		t.Errorf("root list: %v", root)
	}
	if id, _ := root["id"].(string); len(id) != 32 {
		t.Errorf("root id %q is not 32 hex digits", id)
	}

	clusters := decodeArray(t, "cluster list", cliOK(t, "cluster", "list", "-o", "json", dd).stdout,
		"name", "trust_domain", "created_at")
	if len(clusters) != 2 || clusters[0]["name"] != "east" || clusters[1]["name"] != "west" || clusters[0]["trust_domain"] != testTD {
		t.Errorf("cluster list: %v", clusters)
	}

	inters := decodeArray(t, "intermediate list", cliOK(t, "intermediate", "list", "-o", "json", dd).stdout,
		"serial", "cluster", "root_id", "status", "not_before", "not_after")
	if len(inters) != 1 {
		t.Fatalf("intermediate list: %d entries, want 1", len(inters))
	}
	in := inters[0]
	if in["serial"] != iss.Serial || in["cluster"] != "east" || in["root_id"] != root["id"] || in["status"] != "active" {
		t.Errorf("intermediate list: %v (issued serial %s, root %v)", in, iss.Serial, root["id"])
	}
	if got := decodeArray(t, "intermediate list --cluster west", cliOK(t, "intermediate", "list", "--cluster", "west", "-o", "json", dd).stdout); len(got) != 0 {
		t.Errorf("intermediate list --cluster west: %v, want none", got)
	}
}

func TestExitCodes(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)
	cliOK(t, "cluster", "add", "seed", "--trust-domain", testTD, dd) // state, but no root
	for _, tc := range []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"root", "list", "-o", "bogus", dd}, exitUsage, "bogus"},
		{[]string{"bundle", "show", "-o", "json", dd}, exitUsage, "pem, spiffe"},
		{[]string{"root", "list", "--no-such-flag", dd}, exitUsage, "unknown flag"},
		{[]string{"cluster", "add", dd}, exitUsage, "NAME"},
		{[]string{"cluster", "add", "a", "b", dd}, exitUsage, "NAME"},
		{[]string{"cluster", "add", "BAD_NAME", dd}, exitRefused, "BAD_NAME"},
		{[]string{"root", "init", "--trust-domain", "Not A Domain", "--insecure-plaintext-key", dd}, exitRefused, "trust domain"},
		{[]string{"root", "init", "--trust-domain", testTD, "--key-type", "ed25519", "--insecure-plaintext-key", dd}, exitUsage, "key type"},
		{[]string{"intermediate", "issue", "--out", t.TempDir(), "--insecure-plaintext-key", dd}, exitUsage, "--cluster"},
		{[]string{"intermediate", "issue", "--cluster", "east", "--insecure-plaintext-key", dd}, exitUsage, "--out"},
		{[]string{"intermediate", "issue", "--cluster", "east", "--out", t.TempDir(), "--format", "pkcs12", "--insecure-plaintext-key", dd}, exitUsage, "format"},
		{[]string{"intermediate", "issue", "--cluster", "east", "--out", t.TempDir(), "--insecure-plaintext-key", dd}, exitRefused, "not registered"},
		{[]string{"bundle", "show", dd}, exitRefused, "empty"},
		{[]string{"version", "extra"}, exitUsage, "no arguments"},
		{[]string{"root", "list", "-o", "bogus", "--data-dir", "/nonexistent/meshroot"}, exitUsage, "bogus"},
	} {
		r := cli(t, tc.args...)
		if r.code != tc.want {
			t.Errorf("meshroot %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), r.code, tc.want, r.stderr)
			continue
		}
		if !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("meshroot %s: error does not mention %q: %s", strings.Join(tc.args, " "), tc.msg, r.stderr)
		}
	}
}

func TestUnknownSubcommandIsUsageError(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)
	for _, args := range [][]string{{"bogus", dd}, {"audit", "verfy", dd}, {"cluster", "ad", "east", dd}} {
		if r := cli(t, args...); r.code != exitUsage {
			t.Errorf("meshroot %s: exit %d, want %d", strings.Join(args, " "), r.code, exitUsage)
		}
	}
}

func TestEnvironment(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "from-env")
	t.Setenv("MESHROOT_DATA_DIR", dir)
	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key")
	if _, err := os.Stat(filepath.Join(dir, "meshroot.db")); err != nil {
		t.Fatalf("MESHROOT_DATA_DIR was not used: %v", err)
	}
	cliOK(t, "cluster", "add", "east")

	// MESHROOT_OUTPUT=json switches the default output format.
	t.Setenv("MESHROOT_OUTPUT", "json")
	decodeArray(t, "cluster list (MESHROOT_OUTPUT=json)", cliOK(t, "cluster", "list").stdout, "name", "trust_domain", "created_at")

	// A flag beats the environment.
	if r := cliOK(t, "cluster", "list", "-o", "table"); !strings.HasPrefix(r.stdout, "NAME") {
		t.Errorf("-o table with MESHROOT_OUTPUT=json: %q", r.stdout)
	}
	other := filepath.Join(t.TempDir(), "from-flag")
	if r := cli(t, "cluster", "list", "--data-dir", other); r.code != exitUsage || !strings.Contains(r.stderr, other) {
		t.Errorf("--data-dir did not override MESHROOT_DATA_DIR: exit %d, %s", r.code, r.stderr)
	}

	// A bad value in the environment is a usage error naming the variable.
	t.Setenv("MESHROOT_INSECURE_PLAINTEXT_KEY", "maybe")
	r := cli(t, "cluster", "list")
	if r.code != exitUsage || !strings.Contains(r.stderr, "MESHROOT_INSECURE_PLAINTEXT_KEY") {
		t.Errorf("MESHROOT_INSECURE_PLAINTEXT_KEY=maybe: exit %d, %s", r.code, r.stderr)
	}
}

func TestBundleShow(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)
	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key", dd)

	pemOut := cliOK(t, "bundle", "show", "-o", "pem", dd).stdout
	var certs []*x509.Certificate
	rest := []byte(pemOut)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil || block.Type != "CERTIFICATE" {
			t.Fatalf("bundle show -o pem: block %q: %v", block.Type, err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 1 || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("bundle show -o pem: %d certificates (trailing %q), want 1", len(certs), rest)
	}
	if !certs[0].IsCA || certs[0].CheckSignatureFrom(certs[0]) != nil {
		t.Error("bundle show -o pem: not a self-signed CA")
	}
	if def := cliOK(t, "bundle", "show", dd).stdout; def != pemOut {
		t.Error("bundle show without -o is not the PEM output")
	}

	td := spiffeid.RequireTrustDomainFromString(testTD)
	b, err := spiffebundle.Parse(td, []byte(cliOK(t, "bundle", "show", "-o", "spiffe", dd).stdout))
	if err != nil {
		t.Fatalf("bundle show -o spiffe: %v", err)
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != 1 {
		t.Errorf("bundle sequence = %d (set %v), want 1 after root init", seq, ok)
	}
	if auth := b.X509Authorities(); len(auth) != 1 || !auth[0].Equal(certs[0]) {
		t.Errorf("spiffe bundle has %d X.509 authorities, want the one root of the PEM output", len(auth))
	}
}

func TestVersionJSON(t *testing.T) {
	clearEnv(t)
	var v map[string]string
	r := cliOK(t, "version", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, r.stdout)
	}
	if v["version"] == "" || v["go"] == "" {
		t.Errorf("version -o json: %v, want version and go fields", v)
	}
	if r := cliOK(t, "version"); !strings.HasPrefix(r.stdout, "meshroot ") {
		t.Errorf("version: %q", r.stdout)
	}
}

func TestRunExitCode(t *testing.T) {
	clearEnv(t)
	// run is what main calls: it maps errors the same way.
	if code := run([]string{"cluster", "add", "BAD_NAME", dataDir(t)}); code != exitRefused {
		t.Errorf("run(cluster add BAD_NAME) = %d, want %d", code, exitRefused)
	}
	if code := run([]string{"root", "list", "-o", "bogus", dataDir(t)}); code != exitUsage {
		t.Errorf("run(root list -o bogus) = %d, want %d", code, exitUsage)
	}
}
