package server

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/logbuf"
)

// fakeClock is a refusalLimiter's time, moved by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestLimiter(out *logbuf.Buffer, burst, global, keys int) (*slog.Logger, *refusalLimiter, *fakeClock) {
	inner := slog.NewTextHandler(out, nil)
	lim := newRefusalLimiter(inner, time.Minute, burst, global, keys)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	lim.now = clock.now
	return slog.New(&refusalHandler{inner: inner, lim: lim}), lim, clock
}

// A client hammering a refusal writes burst lines per window; the next
// window starts with one summary of how many were left out. Other lines
// and other clients are not held back.
func TestRefusalLimiter_PerClientBurstThenSummary(t *testing.T) {
	var out logbuf.Buffer
	log, lim, clock := newTestLimiter(&out, 3, 1000, 100)
	a := log.With("remote", "192.0.2.1:1000", "client", "a", "user", "u")
	b := log.With("remote", "192.0.2.2:1000", "client", "b", "user", "u")
	for range 50 {
		a.Info("publish refused by ACL", "topic", "secret")
		a.Info("client connected")
	}
	b.Info("subscription refused by ACL", "filter", "secret/#")
	if n := len(out.Lines("publish refused by ACL", "client=a")); n != 3 {
		t.Errorf("client a: %d refusal lines in a window, want 3", n)
	}
	if n := len(out.Lines("client connected")); n != 50 {
		t.Errorf("%d other lines, want all 50", n)
	}
	if n := len(out.Lines("subscription refused by ACL", "client=b")); n != 1 {
		t.Errorf("client b: %d lines, want its 1", n)
	}
	clock.t = clock.t.Add(time.Minute)
	a.Info("publish refused by ACL", "topic", "secret")
	sum := out.Lines("refusal log lines suppressed")
	if len(sum) != 1 || !strings.Contains(sum[0], "suppressed=47") || !strings.Contains(sum[0], "client=a") || !strings.Contains(sum[0], "user=u") {
		t.Fatalf("summary lines %q, want one for client a with suppressed=47", sum)
	}
	if n := len(out.Lines("publish refused by ACL", "client=a")); n != 4 {
		t.Errorf("client a after the window: %d lines, want 4", n)
	}
	// A client that stopped: the sweep writes its summary.
	for range 5 {
		a.Info("publish refused by ACL")
	}
	clock.t = clock.t.Add(time.Minute)
	lim.logSummaries(context.Background(), lim.sweep())
	if sum := out.Lines("refusal log lines suppressed", "suppressed=3"); len(sum) != 1 {
		t.Errorf("swept summaries %q, want one with suppressed=3", out.Lines("refusal log lines suppressed"))
	}
	if len(lim.keys) != 0 {
		t.Errorf("%d keys kept after their windows ended", len(lim.keys))
	}
}

// Clients that change their id on every attempt are bounded by the global
// limit, and the summaries account for every line left out.
func TestRefusalLimiter_GlobalBound(t *testing.T) {
	var out logbuf.Buffer
	log, lim, clock := newTestLimiter(&out, 2, 10, 1000)
	for i := range 100 {
		log.Info("connection refused", "remote", fmt.Sprintf("198.51.100.7:%d", 1000+i), "client", "")
		log.With("client", fmt.Sprintf("id-%d", i)).Info("connection refused")
	}
	if n := len(out.Lines("connection refused")); n != 10 {
		t.Errorf("%d refusal lines from 200 refusals, want the global 10", n)
	}
	clock.t = clock.t.Add(time.Minute)
	lim.logSummaries(context.Background(), lim.flush())
	total := 0
	for _, l := range out.Lines("refusal log lines suppressed") {
		_, v, _ := strings.Cut(l, "suppressed=")
		n, err := strconv.Atoi(strings.Fields(v)[0])
		if err != nil {
			t.Fatalf("summary %q: %v", l, err)
		}
		total += n
	}
	if total != 190 {
		t.Errorf("summaries count %d suppressed lines, want 190", total)
	}
}

// The clients tracked in one window are bounded: past the bound they share
// one key (and its burst).
func TestRefusalLimiter_KeysBounded(t *testing.T) {
	var out logbuf.Buffer
	log, lim, _ := newTestLimiter(&out, 2, 1000, 5)
	for i := range 100 {
		log.With("client", fmt.Sprintf("id-%d", i)).Info("connection refused")
	}
	if len(lim.keys) != 6 {
		t.Errorf("%d keys held, want 5 and the overflow key", len(lim.keys))
	}
	if n := len(out.Lines("connection refused")); n != 5+2 {
		t.Errorf("%d lines, want one for each of 5 keys and 2 for the overflow key", n)
	}
}
