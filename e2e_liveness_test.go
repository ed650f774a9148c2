package main

import (
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
)

// TestNodeID_DuplicateRefused: a replica started with the -node-id of a
// live replica exits with status 2 and a message naming -node-id, after
// waiting at most -node-ttl plus one refresh period. A replica killed and
// started again at once under its own id (a crash-restart loop) starts,
// once its previous run's liveness key has lapsed.
func TestNodeID_DuplicateRefused(t *testing.T) {
	rs := redistest.Start(t)
	startRedisReplica(t, rs.URL(), "twin", "-node-ttl", "1s")

	start := time.Now()
	out, code := runReplicaBinary(t, "-redis-url", rs.URL(), "-node-id", "twin", "-node-ttl", "1s")
	took := time.Since(start)
	t.Logf("duplicate refused after %s with status %d", took.Round(time.Millisecond), code)
	if code != 2 {
		t.Fatalf("exit status %d, want 2 (configuration error); output:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "server: -node-id twin:") {
		t.Errorf("last line %q does not name -node-id twin; output:\n%s", last, out)
	}

	// Crash and restart under the same id: the new run waits for the old
	// liveness key (TTL 2s) to lapse, then starts.
	first := startProcReplica(t, rs.URL(), "phoenix")
	first.Kill(t)
	start = time.Now()
	startProcReplica(t, rs.URL(), "phoenix")
	t.Logf("restart under the same id ready after %s", time.Since(start).Round(time.Millisecond))
}
