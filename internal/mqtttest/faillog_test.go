package mqtttest

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestFailLog_KeepsTheLastLinesInOrder: past failLogLines, the oldest line
// goes; Debug lines are not kept; attributes added by With stay on a line.
func TestFailLog_KeepsTheLastLinesInOrder(t *testing.T) {
	for _, n := range []int{3, failLogLines, failLogLines + 1, 2*failLogLines + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			h := newFailLog(t, "n1").(*failLogHandler)
			log := slog.New(h).With("conn", 9)
			for i := range n {
				log.Info("line", "i", i)
				log.Debug("hidden", "i", i)
			}
			f := h.f
			if want := min(n, failLogLines); len(f.lines) != want {
				t.Fatalf("kept %d lines, want %d", len(f.lines), want)
			}
			first := max(0, n-failLogLines)
			for k := range f.lines {
				line := f.lines[(f.next+k)%len(f.lines)]
				if want := fmt.Sprintf("replica=n1 conn=9 i=%d\n", first+k); !strings.HasSuffix(line, want) {
					t.Fatalf("line %d = %q, want it to end %q", k, line, want)
				}
			}
		})
	}
}
