package toolscript_test

import (
	"path/filepath"
	"testing"

	"github.com/meshroot/meshroot/test/toolscript"
)

// TestPathFromSubfolder: the script is found from this package's folder
// (two levels under it), and $MESHROOT_BUILD_SH wins; outside a checkout
// the error says what to do.
func TestPathFromSubfolder(t *testing.T) {
	p, err := toolscript.Path()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Abs(filepath.Join("..", "tools", "build.sh"))
	if p != want {
		t.Errorf("Path() = %s, want %s", p, want)
	}
	t.Setenv("MESHROOT_BUILD_SH", "/elsewhere/build.sh")
	if p, _ := toolscript.Path(); p != "/elsewhere/build.sh" {
		t.Errorf("with MESHROOT_BUILD_SH: %s", p)
	}
	t.Setenv("MESHROOT_BUILD_SH", "")
	t.Chdir(t.TempDir())
	if _, err := toolscript.Path(); err == nil {
		t.Error("found a build.sh outside the checkout")
	}
}
