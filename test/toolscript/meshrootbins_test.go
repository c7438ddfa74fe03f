package toolscript_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMeshrootBinsLinksOncePerContent runs test/tools/meshroot-bins.sh on
// a throwaway module laid out like this one (cmd/hello, the script at
// test/tools): the first call links hello into the cache and the caller's
// folder; a second call is a hard link of the same file, not a new link;
// a change to the source makes a new entry with the new program; the
// cache keeps the four latest entries; names that are not commands are
// refused.
func TestMeshrootBinsLinksOncePerContent(t *testing.T) {
	script, err := filepath.Abs(filepath.Join("..", "tools", "meshroot-bins.sh"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	write := func(rel, body string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	write("test/tools/meshroot-bins.sh", string(src))
	write("go.mod", "module example.com/hello\n\ngo 1.26\n")
	hello := func(word string) {
		write("cmd/hello/main.go", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\""+word+"\") }\n")
	}
	cache, out := t.TempDir(), t.TempDir()
	run := func(names ...string) (string, error) {
		cmd := exec.Command(filepath.Join(root, "test", "tools", "meshroot-bins.sh"), append([]string{out}, names...)...)
		cmd.Env = append(os.Environ(), "MESHROOT_TOOLS_CACHE="+cache, "GOFLAGS=")
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	says := func() string {
		b, err := exec.Command(filepath.Join(out, "hello")).Output()
		if err != nil {
			t.Fatalf("running the linked hello: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	entries := func() []string {
		es, _ := filepath.Glob(filepath.Join(cache, "link", "hello", "*"))
		return es
	}
	inode := func(p string) uint64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}

	hello("one")
	if msg, err := run("hello"); err != nil {
		t.Fatalf("first call: %v\n%s", err, msg)
	}
	if got := says(); got != "one" {
		t.Fatalf("hello says %q, want one", got)
	}
	first := entries()
	if len(first) != 1 {
		t.Fatalf("cache entries after one link: %v", first)
	}
	cached := inode(filepath.Join(first[0], "hello"))
	if inode(filepath.Join(out, "hello")) != cached {
		t.Error("the caller's hello is not the cache's file")
	}
	if msg, err := run("hello"); err != nil {
		t.Fatalf("second call: %v\n%s", err, msg)
	}
	if es := entries(); len(es) != 1 || inode(filepath.Join(out, "hello")) != cached {
		t.Errorf("the same source linked again: entries %v", es)
	}

	for i, word := range []string{"two", "three", "four", "five", "six"} {
		hello(word)
		if msg, err := run("hello"); err != nil {
			t.Fatalf("call %d: %v\n%s", i+3, err, msg)
		}
		if got := says(); got != word {
			t.Fatalf("after the change to %q, hello says %q", word, got)
		}
	}
	if es := entries(); len(es) != 4 {
		t.Errorf("cache keeps %d entries, want the 4 latest: %v", len(es), es)
	}
	if _, err := os.Stat(first[0]); err == nil {
		t.Error("the least recently used entry was kept")
	}

	for _, bad := range []string{"nope", "../hello", ".hidden"} {
		if msg, err := run(bad); err == nil {
			t.Errorf("%q was accepted: %s", bad, msg)
		}
	}
}
