package store_test

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxInterfaceMethods is the most methods any interface in meshroot may
// have: a consumer declares the few methods it uses, and the store's
// surface is split by concern (see Reader and Tx).
const maxInterfaceMethods = 10

// TestNoInterfaceOverTenMethods type-checks every package of the module
// and fails for each interface, named or not, declared in a non-test,
// non-generated file whose method set (embedded interfaces included) has
// more than maxInterfaceMethods methods.
func TestNoInterfaceOverTenMethods(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the whole module")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the module's packages")
	}
	root := moduleRoot(t)
	// Export data of every dependency (built, or found in the build cache).
	exports := map[string]string{}
	for _, l := range goList(t, goTool, root, "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}", "./...") {
		if path, file, ok := strings.Cut(l, "\t"); ok && file != "" {
			exports[path] = file
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok {
			return nil, os.ErrNotExist
		}
		return os.Open(file)
	})
	checked := 0
	for _, l := range goList(t, goTool, root, "-f", "{{.ImportPath}}\t{{.Dir}}\t{{join .GoFiles \" \"}}", "./...") {
		f := strings.SplitN(l, "\t", 3)
		if len(f) != 3 || f[2] == "" {
			continue
		}
		checked += checkPackage(t, fset, imp, f[0], f[1], strings.Fields(f[2]))
	}
	if checked < 20 {
		t.Fatalf("checked only %d interfaces: the package walk is broken", checked)
	}
}

// checkPackage type-checks one package and reports its oversized
// interfaces; it returns how many interfaces it checked.
func checkPackage(t *testing.T, fset *token.FileSet, imp types.Importer, path, dir string, names []string) int {
	t.Helper()
	var files []*ast.File
	for _, n := range names {
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	conf := types.Config{Importer: imp}
	if _, err := conf.Check(path, fset, files, info); err != nil {
		t.Fatalf("type-check %s: %v", path, err)
	}
	checked := 0
	for _, f := range files {
		if ast.IsGenerated(f) {
			continue
		}
		names := map[*ast.InterfaceType]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if it, ok := ts.Type.(*ast.InterfaceType); ok {
					names[it] = ts.Name.Name
				}
			}
			it, ok := n.(*ast.InterfaceType)
			if !ok {
				return true
			}
			iface, ok := info.Types[it].Type.Underlying().(*types.Interface)
			if !ok {
				return true
			}
			checked++
			if n := iface.NumMethods(); n > maxInterfaceMethods {
				name := names[it]
				if name == "" {
					name = "an interface literal"
				}
				t.Errorf("%s: %s.%s has %d methods (at most %d): split it by concern, or let each consumer declare the methods it uses",
					fset.Position(it.Pos()), path, name, n, maxInterfaceMethods)
			}
			return true
		})
	}
	return checked
}

// moduleRoot returns the folder of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// goList runs `go list args...` in dir and returns its output lines.
func goList(t *testing.T, goTool, dir string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(goTool, append([]string{"list"}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}
