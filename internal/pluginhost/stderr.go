package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
)

// maxLine bounds one buffered stderr line of the plugin.
const maxLine = 64 << 10

// lineLogger forwards the plugin's stderr to meshroot's log, one record a
// line: the plugin's slog JSON lines (level, msg, fields) at their level
// with their fields, anything else (a panic, a message before the logger
// exists) at warn.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func newLineLogger(log *slog.Logger) *lineLogger {
	return &lineLogger{log: log.With("component", BinaryName)}
}

// Write buffers p and logs every complete line.
func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > maxLine {
				l.line(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.line(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) line(b []byte) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return
	}
	var rec map[string]any
	if b[0] != '{' || json.Unmarshal(b, &rec) != nil {
		l.log.Warn(string(b))
		return
	}
	msg, _ := rec[slog.MessageKey].(string)
	lvl, _ := rec[slog.LevelKey].(string)
	attrs := make([]any, 0, 2*len(rec))
	for k, v := range rec {
		if k != slog.MessageKey && k != slog.LevelKey && k != slog.TimeKey {
			attrs = append(attrs, k, v)
		}
	}
	l.log.Log(context.Background(), level(lvl), msg, attrs...)
}

func level(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
