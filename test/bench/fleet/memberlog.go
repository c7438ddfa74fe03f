package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// bundleReceived is what the agent logs (at info) for each trust bundle
// its watch delivers, with its sequence: when a change reached the agent,
// before the agent's own work to apply it.
const bundleReceived = "trust bundle received"

// memberLogSize is how many of its last log records each agent keeps,
// each cut to memberLogLine bytes: a record naming the CAs that lack a
// CRL lists up to the whole fleet (~100 KB at 1,000 clusters), and 1,000
// agents keeping 40 of them whole held gigabytes.
const (
	memberLogSize = 40
	memberLogLine = 1 << 10
)

// memberLog keeps an agent's last log records (info and above), so that
// an agent that never applies can be shown, and passes its warnings and
// errors on to the fleet's warnLog.
type memberLog struct {
	warn *warnLog
	rec  *recorder // told of each bundle received
	mu   sync.Mutex
	ring []string
	next int
}

// handler is the slog.Handler for the agent's Config.Log.
func (m *memberLog) handler() slog.Handler { return &memberHandler{m: m} }

// tail returns the records kept, oldest first.
func (m *memberLog) tail() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ring) < memberLogSize {
		return append([]string(nil), m.ring...)
	}
	return append(append([]string(nil), m.ring[m.next:]...), m.ring[:m.next]...)
}

func (m *memberLog) add(line string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ring) < memberLogSize {
		m.ring = append(m.ring, line)
		return
	}
	m.ring[m.next] = line
	m.next = (m.next + 1) % memberLogSize
}

type memberHandler struct {
	m     *memberLog
	attrs []slog.Attr
}

func (h *memberHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *memberHandler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Time.Format(time.TimeOnly + ".000"))
	b.WriteString(" " + r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		if r.Message == bundleReceived && a.Key == "sequence" && h.m.rec != nil {
			h.m.rec.receive(r.Time, a.Value.Uint64())
		}
		return true
	})
	line := b.String()
	if len(line) > memberLogLine {
		line = line[:memberLogLine] + fmt.Sprintf("...[%d bytes]", len(line))
	}
	h.m.add(line)
	if r.Level >= slog.LevelWarn {
		r.AddAttrs(h.attrs...)
		return h.m.warn.Handle(ctx, r)
	}
	return nil
}

func (h *memberHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &memberHandler{m: h.m, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *memberHandler) WithGroup(string) slog.Handler { return h }
