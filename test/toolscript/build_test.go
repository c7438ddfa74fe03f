package toolscript_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBuildStaleFollowsModuleFiles: build.sh --stale names a tool whose
// cached binaries are missing, not a tool built from its module files as
// they are, and names it again once its go.mod changes (as align.sh
// changes it), so that `make tools` rebuilds it.
func TestBuildStaleFollowsModuleFiles(t *testing.T) {
	orig, err := filepath.Abs(filepath.Join("..", "tools"))
	if err != nil {
		t.Fatal(err)
	}
	// a copy of test/tools with step-ca's module files only
	tools := filepath.Join(t.TempDir(), "tools")
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(filepath.Join(orig, "build.sh"), filepath.Join(tools, "build.sh"))
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(filepath.Join(orig, "stepca", f), filepath.Join(tools, "stepca", f))
	}
	cache := t.TempDir()
	stale := func() []string {
		cmd := exec.Command(filepath.Join(tools, "build.sh"), "--stale")
		cmd.Env = append(os.Environ(), "MESHROOT_TOOLS_CACHE="+cache)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out))
	}
	if s := stale(); !slices.Contains(s, "step-ca") || len(s) != 6 {
		t.Fatalf("empty cache: stale %q, want all six tools", s)
	}
	// a step-ca build of these module files: a binary and the stamp build.sh
	// writes (its key, from the script's --modkey)
	bins, _ := filepath.Glob(filepath.Join(cache, "bin"))
	if len(bins) != 1 {
		t.Fatalf("build.sh made no bin folder in %s", cache)
	}
	cmd := exec.Command(filepath.Join(tools, "build.sh"), "--modkey", "step-ca")
	cmd.Env = append(os.Environ(), "MESHROOT_TOOLS_CACHE="+cache)
	key, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	stepca := filepath.Join(bins[0], "step-ca-"+stepcaVersion(t, filepath.Join(tools, "build.sh")))
	copyFile("/bin/true", filepath.Join(stepca, "step-ca"))
	if err := os.WriteFile(filepath.Join(stepca, ".modkey"), key, 0o644); err != nil {
		t.Fatal(err)
	}
	if s := stale(); slices.Contains(s, "step-ca") || len(s) != 5 {
		t.Fatalf("step-ca built from these files: stale %q, want the five others", s)
	}
	// align.sh raises a module: the build is stale again
	gomod := filepath.Join(tools, "stepca", "go.mod")
	b, _ := os.ReadFile(gomod)
	if err := os.WriteFile(gomod, append(b, "// raised\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if s := stale(); !slices.Contains(s, "step-ca") {
		t.Fatalf("go.mod changed after the build: stale %q, want step-ca among them", s)
	}
	// and a missing binary with a matching stamp is stale too
	if err := os.WriteFile(gomod, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(stepca, "step-ca")); err != nil {
		t.Fatal(err)
	}
	if s := stale(); !slices.Contains(s, "step-ca") {
		t.Fatalf("binary removed: stale %q, want step-ca among them", s)
	}
}

// stepcaVersion reads the step-ca version build.sh pins (its cache folder).
func stepcaVersion(t *testing.T, script string) string {
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "stepca_v="); ok {
			return v
		}
	}
	t.Fatal("no stepca_v= in build.sh")
	return ""
}
