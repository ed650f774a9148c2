package main

// End-to-end tests with Debian's mosquitto_pub / mosquitto_sub, a second,
// independent client implementation.

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// mosqArgs are the connection arguments for a deployment's replica.
func mosqArgs(ts endpoint, args ...string) []string {
	host, port, _ := net.SplitHostPort(ts.Addr())
	return append([]string{"-h", host, "-p", port, "-V", "mqttv311"}, args...)
}

// runMosq runs a mosquitto client to completion within 15s and returns its
// output and error.
func runMosq(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	path := needMosquittoClients(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// mustMosq is runMosq that fails the test on a non-zero exit.
func mustMosq(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runMosq(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// QoS 1 from mosquitto_pub to mosquitto_sub. mosquitto_sub gives no sign of
// having subscribed, so the publisher repeats until the subscriber, which
// exits after one message, has exited.
func TestMosquitto_QoS1RoundTrip(t *testing.T) {
	subPath := needMosquittoClients(t, "mosquitto_sub")
	needMosquittoClients(t, "mosquitto_pub")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		var out bytes.Buffer
		sub := exec.Command(subPath, mosqArgs(d.sub(), "-i", unique(t, "sub"), "-t", topic, "-q", "1", "-C", "1", "-v", "-d")...)
		sub.Stdout, sub.Stderr = &out, &out
		if err := sub.Start(); err != nil {
			t.Fatalf("start mosquitto_sub: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- sub.Wait() }()
		t.Cleanup(func() { _ = sub.Process.Kill() })
		deadline := time.After(10 * time.Second)
		for exited := false; !exited; {
			mustMosq(t, "mosquitto_pub", mosqArgs(d.pub(), "-i", unique(t, "pub"), "-t", topic, "-q", "1", "-m", "hello mosquitto")...)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
				}
				exited = true
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("mosquitto_sub received nothing within 10s\n%s", out.String())
			}
		}
		got := out.String()
		if !strings.Contains(got, topic+" hello mosquitto") {
			t.Fatalf("mosquitto_sub output lacks the message:\n%s", got)
		}
		if !strings.Contains(got, "received PUBLISH (d0, q1, r0") {
			t.Fatalf("message not delivered at QoS 1 with DUP=0, RETAIN=0:\n%s", got)
		}
	})
}

// mosquitto_pub -r stores a retained message that mosquitto_sub receives
// with RETAIN=1; mosquitto_pub -r -n clears it.
func TestMosquitto_Retained(t *testing.T) {
	needMosquittoClients(t, "mosquitto_sub")
	needMosquittoClients(t, "mosquitto_pub")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		mustMosq(t, "mosquitto_pub", mosqArgs(d.pub(), "-t", topic, "-q", "1", "-r", "-m", "kept")...)
		out := mustMosq(t, "mosquitto_sub", mosqArgs(d.sub(), "-t", topic, "-q", "1", "-C", "1", "-W", "5", "-v", "-d")...)
		if !strings.Contains(out, topic+" kept") || !strings.Contains(out, "r1") {
			t.Fatalf("retained message not received with RETAIN=1:\n%s", out)
		}
		mustMosq(t, "mosquitto_pub", mosqArgs(d.pub(), "-t", topic, "-q", "1", "-r", "-n")...)
		out, err := runMosq(t, "mosquitto_sub", mosqArgs(d.sub(), "-t", topic, "-C", "1", "-W", "1", "-v")...)
		if err == nil || strings.Contains(out, "kept") {
			t.Fatalf("cleared retained message still delivered (err %v):\n%s", err, out)
		}
	})
}

// mosquitto_sub's will is published when it dies without DISCONNECT.
func TestMosquitto_Will(t *testing.T) {
	subPath := needMosquittoClients(t, "mosquitto_sub")
	stdbuf, err := exec.LookPath("stdbuf")
	if err != nil {
		t.Skip("stdbuf (coreutils) not installed")
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		willTopic := unique(t, "will")
		col := newCollector()
		watcher, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "watcher"), true))
		subscribe(t, watcher, willTopic, 1, col)

		args := append([]string{"-oL", subPath}, mosqArgs(d.pub(), "-d", "-i", unique(t, "dying"), "-t", unique(t, "t"),
			"--will-topic", willTopic, "--will-payload", "mosquitto died", "--will-qos", "1")...)
		cmd := exec.Command(stdbuf, args...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start mosquitto_sub: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		subscribed := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "received SUBACK") {
					close(subscribed)
					break
				}
			}
			for sc.Scan() {
			}
		}()
		select {
		case <-subscribed:
		case <-time.After(waitTimeout):
			t.Fatal("mosquitto_sub did not subscribe")
		}
		_ = cmd.Process.Kill() // SIGKILL: no DISCONNECT
		m := col.next(t)
		if string(m.Payload()) != "mosquitto died" {
			t.Fatalf("will payload %q", m.Payload())
		}
	})
}

// mosquitto_sub -c -i keeps a persistent session: messages published while
// it is away are delivered when it returns.
func TestMosquitto_PersistentSession(t *testing.T) {
	needMosquittoClients(t, "mosquitto_sub")
	needMosquittoClients(t, "mosquitto_pub")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "persistent")
		topic := unique(t, "t")
		mustMosq(t, "mosquitto_sub", mosqArgs(d.sub(), "-c", "-i", id, "-q", "1", "-t", topic, "-E")...)
		for _, m := range []string{"offline-1", "offline-2"} {
			mustMosq(t, "mosquitto_pub", mosqArgs(d.pub(), "-q", "1", "-t", topic, "-m", m)...)
		}
		out := mustMosq(t, "mosquitto_sub", mosqArgs(d.sub(), "-c", "-i", id, "-q", "1", "-t", topic, "-C", "2", "-W", "5", "-v")...)
		want := topic + " offline-1\n" + topic + " offline-2\n"
		if out != want {
			t.Fatalf("mosquitto_sub -c got:\n%s\nwant:\n%s", out, want)
		}
	})
}
