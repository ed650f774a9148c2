package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildExample compiles one of ./examples into a temporary directory.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "./examples/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", name, err, out)
	}
	return bin
}

// TestExamples_PublisherToSubscriber runs the example programs against the
// real broker: the subscriber receives what the publisher sends, and then a
// retained message on a second run.
func TestExamples_PublisherToSubscriber(t *testing.T) {
	pub := buildExample(t, "publisher")
	sub := buildExample(t, "subscriber")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var out bytes.Buffer
		subCmd := exec.CommandContext(ctx, sub, "-broker", d.sub().URL(), "-topic", "examples/#", "-qos", "1", "-count", "3")
		subCmd.Stdout = &out
		subCmd.Stderr = &out
		if err := subCmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The subscriber needs its SUBACK before anything is published; a
		// retained message makes the test independent of that timing.
		for i, args := range [][]string{
			{"-topic", "examples/a", "-qos", "1", "-count", "2", "-message", "hello"},
			{"-topic", "examples/r", "-qos", "1", "-retain", "-message", "kept"},
		} {
			if i == 0 {
				time.Sleep(300 * time.Millisecond)
			}
			cmd := exec.CommandContext(ctx, pub, append([]string{"-broker", d.pub().URL()}, args...)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("publisher %v: %v\n%s", args, err, b)
			}
		}
		if err := subCmd.Wait(); err != nil {
			t.Fatalf("subscriber: %v\n%s", err, out.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 3 {
			t.Fatalf("subscriber printed %d lines, want 3:\n%s", len(lines), out.String())
		}
		if !strings.HasPrefix(lines[2], "examples/r qos=1") || !strings.Contains(lines[2], "kept") {
			t.Errorf("third line %q, want the retained message", lines[2])
		}
		// Clear the retained message so other tests start clean.
		_ = exec.CommandContext(ctx, pub, "-broker", d.pub().URL(), "-topic", "examples/r", "-retain", "-message", "").Run()
	})
}
