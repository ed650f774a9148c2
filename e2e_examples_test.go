package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
)

// startLines starts bin with args and returns next, which reads its next
// line of output (failing the test when the output ends), and wait, which
// waits for it to exit and fails the test unless it succeeded.
func startLines(t *testing.T, ctx context.Context, bin string, args ...string) (next func() string, wait func()) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	next = func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("%s output ended: %v\n%s", filepath.Base(bin), lines.Err(), stderr.String())
		}
		return lines.Text()
	}
	wait = func() {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(bin), err, stderr.String())
		}
	}
	return next, wait
}

// TestExamples_PublisherToSubscriber runs the example programs against the
// real broker: a subscriber started after a retained message gets it with
// its retained mark, and then the messages the publisher sends live.
func TestExamples_PublisherToSubscriber(t *testing.T) {
	pub := mqtttest.Binary(t, "./examples/publisher")
	sub := mqtttest.Binary(t, "./examples/subscriber")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		publish := func(args ...string) {
			t.Helper()
			cmd := exec.CommandContext(ctx, pub, append([]string{"-broker", d.pub().URL()}, args...)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("publisher %v: %v\n%s", args, err, b)
			}
		}
		publish("-topic", "examples/r", "-qos", "1", "-retain", "-message", "kept")
		// Clear the retained message so other tests start clean.
		defer func() {
			_ = exec.Command(pub, "-broker", d.pub().URL(), "-topic", "examples/r", "-retain", "-message", "").Run()
		}()

		next, wait := startLines(t, ctx, sub, "-broker", d.sub().URL(), "-topic", "examples/#", "-qos", "1", "-count", "3")
		// The retained message arrives once the subscription is in place:
		// from then on live messages reach the subscriber.
		if first := next(); !strings.HasPrefix(first, "examples/r qos=1 retained") || !strings.Contains(first, "kept") {
			t.Fatalf("first line %q, want the retained message marked retained", first)
		}
		publish("-topic", "examples/a", "-qos", "1", "-count", "2", "-message", "hello")
		for i := range 2 {
			if line := next(); !strings.HasPrefix(line, "examples/a qos=1 hello") {
				t.Errorf("live line %d: %q, want examples/a at QoS 1", i, line)
			}
		}
		wait()
	})
}

// TestExamples_Paho5PublisherToSubscriber runs the MQTT 5.0 examples
// (paho.golang's autopaho) against the real broker: the retained message
// first, then live messages with their User Property and Content Type,
// which cross replicas unchanged.
func TestExamples_Paho5PublisherToSubscriber(t *testing.T) {
	pub := mqtttest.Binary(t, "./examples/publisher5")
	sub := mqtttest.Binary(t, "./examples/subscriber5")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		topic := unique(t, "ex5")
		publish := func(args ...string) {
			t.Helper()
			cmd := exec.CommandContext(ctx, pub, append([]string{"-broker", "mqtt://" + d.pub().Addr(), "-topic"}, args...)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("publisher5 %v: %v\n%s", args, err, b)
			}
		}
		publish(topic+"/r", "-qos", "1", "-retain", "-message", "kept")
		defer func() {
			_ = exec.Command(pub, "-broker", "mqtt://"+d.pub().Addr(), "-topic", topic+"/r", "-retain", "-message", "").Run()
		}()
		next, wait := startLines(t, ctx, sub, "-broker", "mqtt://"+d.sub().Addr(), "-topic", topic+"/#", "-qos", "1", "-count", "3")
		if first := next(); first != topic+"/r qos=1 retained kept" {
			t.Fatalf("first line %q, want the retained message marked retained", first)
		}
		publish(topic+"/a", "-qos", "1", "-count", "2", "-message", "hello", "-content-type", "text/plain", "-user", "source=probe-7")
		for i := range 2 {
			if line, want := next(), topic+"/a qos=1 hello content-type=text/plain source=probe-7"; line != want {
				t.Errorf("live line %d: %q, want %q", i, line, want)
			}
		}
		wait()
	})
}

// TestExamples_BenchSpeaksMQTT5 runs the load tool with -protocol 5 against
// the real broker, QoS 2 with a window wider than the server's Receive
// Maximum (-max-inflight 20): the tool keeps to the CONNACK's Receive
// Maximum [MQTT-3.3.4-7], and every message arrives once.
func TestExamples_BenchSpeaksMQTT5(t *testing.T) {
	bench := mqtttest.Binary(t, "./examples/bench")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bench, "-pub-brokers", d.pub().Addr(), "-sub-brokers", d.sub().Addr(),
			"-protocol", "5", "-qos", "2", "-publishers", "2", "-subscribers", "1", "-count", "300", "-inflight", "50",
			"-id-prefix", unique(t, "b5"), "-json").Output()
		if err != nil {
			t.Fatalf("bench -protocol 5: %v\n%s", err, out)
		}
		var rep struct {
			Sent, Acked, Delivered, Duplicates, Lost uint64
			Errors                                   []string
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("report: %v\n%s", err, out)
		}
		if rep.Sent != 600 || rep.Acked != 600 || rep.Delivered != 600 || rep.Duplicates != 0 || rep.Lost != 0 || len(rep.Errors) > 0 {
			t.Fatalf("bench -protocol 5 QoS 2: %+v, want 600 sent, acknowledged and delivered once", rep)
		}
	})
}
