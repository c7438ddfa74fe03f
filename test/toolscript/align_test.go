package toolscript_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestToolModulesAligned runs test/tools/align.sh --check: every module
// two test tools compile is required at one version, so that its packages
// compile once (a go.mod changed without running align.sh fails here).
// It reads only the module cache (GOPROXY=off): `make test` builds the
// tools, and so downloads their modules, before the tests run; run by
// hand before that, it skips.
func TestToolModulesAligned(t *testing.T) {
	script, err := filepath.Abs(filepath.Join("..", "tools", "align.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, "--check")
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	switch {
	case err == nil:
		t.Log(strings.TrimSpace(string(out)))
	case strings.Contains(stderr.String(), "go list failed"):
		t.Skipf("the tools' modules are not downloaded (make tools): %s", stderr.String())
	default:
		t.Fatalf("align.sh --check: %v\n%s", err, stderr.String())
	}
}

// TestAlignHighest: align.sh's --highest filter picks each module's
// highest version by semantic versioning, whatever order the lines come
// in: numeric parts compared as numbers, a pre-release (and so a Go
// pseudo-version) below its release, pre-release identifiers per semver,
// +incompatible ignored.
func TestAlignHighest(t *testing.T) {
	script, err := filepath.Abs(filepath.Join("..", "tools", "align.sh"))
	if err != nil {
		t.Fatal(err)
	}
	pairs := [][3]string{
		// path, lower version, higher version
		{"a", "v1.2.0-rc.1", "v1.2.0"},
		{"b", "v0.0.0-20260101000000-abcdefabcdef", "v0.1.0"},
		{"c", "v1.9.0", "v1.10.0"},
		{"d", "v1.9.9", "v2.0.0+incompatible"},
		{"e", "v1.0.0-alpha.9", "v1.0.0-alpha.10"},
		{"f", "v1.0.0-alpha.10", "v1.0.0-alpha.beta"},
		{"g", "v1.0.0-rc.1", "v1.0.0-rc.1.1"},
		{"h", "v0.0.0-20250101000000-abcdefabcdef", "v0.0.0-20260101000000-abcdefabcdef"},
		{"i", "v1.36.11", "v1.36.12-0.20260120151049-f2248ac996af"},
		{"j", "v0.9.0", "v0.9.0"},
	}
	for _, lowFirst := range []bool{true, false} {
		var in strings.Builder
		for _, p := range pairs {
			if lowFirst {
				in.WriteString(p[0] + " " + p[1] + "\n" + p[0] + " " + p[2] + "\n")
			} else {
				in.WriteString(p[0] + " " + p[2] + "\n" + p[0] + " " + p[1] + "\n")
			}
		}
		cmd := exec.Command(script, "--highest")
		cmd.Stdin = strings.NewReader(in.String())
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, p := range pairs {
			want = append(want, p[0]+" "+p[2])
		}
		got := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !slices.Equal(got, want) {
			t.Errorf("lower first=%v:\n got %q\nwant %q", lowFirst, got, want)
		}
	}
}
