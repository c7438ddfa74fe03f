package pluginhost

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestPluginLogLines: the plugin's slog JSON lines reach meshroot's log
// at their own level with their fields (written in pieces, as a pipe
// delivers them); anything else on its stderr (a panic) at warn.
func TestPluginLogLines(t *testing.T) {
	var out bytes.Buffer
	l := newLineLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	plugin := new(bytes.Buffer)
	slog.New(slog.NewJSONHandler(plugin, nil)).Error("opening the key manager failed", "uri", "awskms:region=x")
	line := plugin.Bytes()
	l.Write(line[:10])
	l.Write(line[10:])
	l.Write([]byte("panic: something\n"))
	got := out.String()
	for _, want := range []string{
		`level=ERROR msg="opening the key manager failed" component=meshroot-plugin uri="awskms:region=x"`,
		`level=WARN msg="panic: something" component=meshroot-plugin`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "time=") != 2 {
		t.Errorf("the plugin's own time field was kept as an attribute:\n%s", got)
	}
}
