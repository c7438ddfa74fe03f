package storetest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/store"
)

// suiteFiles parses the suite's own (non-test) source files.
func suiteFiles(t *testing.T) []*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// storeMethods returns, for every method a store hands out (through Store
// and the Tx of Update), the interface that declares it.
func storeMethods() map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			switch f := t.Field(i).Type; f.Kind() {
			case reflect.Struct:
				walk(f)
			case reflect.Interface:
				for m := range f.NumMethod() {
					out[f.Method(m).Name] = f.Name()
				}
			}
		}
	}
	walk(reflect.TypeFor[store.Store]())
	walk(reflect.TypeFor[store.Tx]())
	return out
}

// TestSuiteCallsEveryMethod fails when a method of one of the store's
// interfaces is called nowhere in the suite: a method added to an interface
// must come with the conformance tests that every implementation then runs.
func TestSuiteCallsEveryMethod(t *testing.T) {
	called := map[string]bool{}
	for _, f := range suiteFiles(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok {
				if sel, ok := c.Fun.(*ast.SelectorExpr); ok {
					called[sel.Sel.Name] = true
				}
			}
			return true
		})
	}
	methods := storeMethods()
	if len(methods) < 30 {
		t.Fatalf("found only %d store methods by reflection; the walk is broken", len(methods))
	}
	for m, iface := range methods {
		if !called[m] {
			t.Errorf("store.%s.%s is not exercised by the conformance suite: add a test for it to Run", iface, m)
		}
	}
}

// TestRunListsEveryTest fails when a test function of the suite is not in
// Run's table, and so would never run against any store.
func TestRunListsEveryTest(t *testing.T) {
	var tests, listed []string
	for _, f := range suiteFiles(t) {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil {
				continue
			}
			if strings.HasPrefix(fd.Name.Name, "test") {
				tests = append(tests, fd.Name.Name)
			}
			if fd.Name.Name == "Run" {
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					if id, ok := n.(*ast.Ident); ok {
						listed = append(listed, id.Name)
					}
					return true
				})
			}
		}
	}
	if len(tests) == 0 {
		t.Fatal("no test functions found")
	}
	for _, name := range tests {
		if !slices.Contains(listed, name) {
			t.Errorf("%s is not listed in Run", name)
		}
	}
}
