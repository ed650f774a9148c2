package mqtttest

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// failLogLines is how many of a replica's last log lines a failed test
// prints.
const failLogLines = 400

// failLog keeps a replica's last log lines at Info and above, and prints
// them when the test that started it fails: a failure in CI then says what
// the replica saw (a failover, a lost subscription) without a re-run.
type failLog struct {
	mu    sync.Mutex
	lines []string // circular, failLogLines long once full
	next  int
	buf   bytes.Buffer
	text  slog.Handler
}

// newFailLog returns the handler to add to a replica's logger, and has t
// print its lines at cleanup if t failed. It is registered before the
// replica's own stop, so it runs after it: the lines include the shutdown.
func newFailLog(t testing.TB, node string) slog.Handler {
	f := &failLog{}
	f.text = slog.NewTextHandler(&f.buf, &slog.HandlerOptions{Level: slog.LevelInfo}).WithAttrs([]slog.Attr{slog.String("replica", node)})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		var b strings.Builder
		for i := range f.lines {
			b.WriteString(f.lines[(f.next+i)%len(f.lines)])
		}
		t.Logf("replica %s, its last %d log lines:\n%s", node, len(f.lines), b.String())
	})
	return &failLogHandler{f: f, h: f.text}
}

// failLogHandler is one view (attributes, group) of a failLog.
type failLogHandler struct {
	f *failLog
	h slog.Handler
}

func (h *failLogHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *failLogHandler) Handle(ctx context.Context, r slog.Record) error {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf.Reset()
	if err := h.h.Handle(ctx, r); err != nil {
		return err
	}
	line := f.buf.String()
	if len(f.lines) < failLogLines {
		f.lines = append(f.lines, line)
		return nil
	}
	f.lines[f.next] = line
	f.next = (f.next + 1) % failLogLines
	return nil
}

func (h *failLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &failLogHandler{f: h.f, h: h.h.WithAttrs(as)}
}

func (h *failLogHandler) WithGroup(name string) slog.Handler {
	return &failLogHandler{f: h.f, h: h.h.WithGroup(name)}
}
