package main

// End-to-end tests of the built binary: flag errors, -h, and SIGTERM.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/logbuf"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// runBinary runs bin with args and an empty MQTT_* environment, and returns
// its exit status, stdout and stderr.
func runBinary(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("run %v: %v", args, err)
		return -1, "", ""
	}
}

func TestBinary_Flags(t *testing.T) {
	bin := mqtttest.Binary(t, ".")

	t.Run("bad flags exit 2 with one line naming the flag", func(t *testing.T) {
		tests := []struct {
			args []string
			flag string
		}{
			{[]string{"-no-such-flag"}, "-no-such-flag"},
			{[]string{"-max-inflight", "lots"}, "-max-inflight"},
			{[]string{"-max-inflight", "0"}, "-max-inflight"},
			{[]string{"-connect-timeout", "soon"}, "-connect-timeout"},
			{[]string{"-max-packet-size", "-1"}, "-max-packet-size"},
			{[]string{"-acl-file", "/nonexistent/acl"}, "-acl-file"},
			{[]string{"-password-file", "/nonexistent/passwd"}, "-password-file"},
			{[]string{"-redis-url", "http://not-redis"}, "-redis-url"},
			{[]string{"-log-format", "xml"}, "-log-format"},
			{[]string{"-log-level", "loud"}, "-log-level"},
			{[]string{"-allow-anonymous=maybe"}, "-allow-anonymous"},
		}
		for _, tt := range tests {
			code, stdout, stderr := runBinary(t, bin, append([]string{"-listen", "127.0.0.1:0", "-http", "off"}, tt.args...)...)
			if code != 2 {
				t.Errorf("%v: exit status %d, want 2 (stderr %q)", tt.args, code, stderr)
				continue
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.flag) {
				t.Errorf("%v: stderr %q, want one line naming %s", tt.args, stderr, tt.flag)
			}
			if stdout != "" {
				t.Errorf("%v: stdout %q, want nothing", tt.args, stdout)
			}
		}
	})

	t.Run("-h lists the flags and exits 0", func(t *testing.T) {
		code, stdout, stderr := runBinary(t, bin, "-h")
		if code != 0 {
			t.Fatalf("exit status %d, want 0 (stderr %q)", code, stderr)
		}
		help := stdout + stderr
		for _, f := range []string{"-listen", "-redis-url", "-node-id", "-acl-file", "-password-file", "-allow-anonymous",
			"-max-packet-size", "-connect-timeout", "-max-inflight", "-max-queued-messages", "-max-connections",
			"-log-level", "-log-format", ":1883", "MQTT_LISTEN"} {
			if !strings.Contains(help, f) {
				t.Errorf("-h output lacks %q:\n%s", f, help)
			}
		}
	})

	t.Run("environment variables are read and named", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-listen", "127.0.0.1:0", "-http", "off")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "MQTT_MAX_INFLIGHT=lots"}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("exit %v, want status 2 (output %q)", err, out)
		}
		if !strings.Contains(string(out), "MQTT_MAX_INFLIGHT") || strings.Count(strings.TrimRight(string(out), "\n"), "\n") != 0 {
			t.Fatalf("output %q, want one line naming MQTT_MAX_INFLIGHT", out)
		}
	})

	t.Run("bad input logs one line with reason and remote address", func(t *testing.T) {
		addr, lines, _ := startBinary(t, bin)
		c := mqtttest.Dial(t, addr)
		c.Write(packetstest.Named("subscribe_empty_body").Raw) // SUBSCRIBE as first packet, and malformed
		c.ExpectClosed(waitTimeout)
		remote := c.Conn.LocalAddr().String()
		var matching []string
		timeout := time.After(waitTimeout)
		for len(matching) == 0 {
			select {
			case l := <-lines:
				if strings.Contains(l, remote) {
					matching = append(matching, l)
				}
			case <-timeout:
				t.Fatalf("no log line names the remote address %s", remote)
			}
		}
		// Give a second line for the same connection a moment to show up.
		for done := false; !done; {
			select {
			case l := <-lines:
				if strings.Contains(l, remote) {
					matching = append(matching, l)
				}
			case <-time.After(quietWindow):
				done = true
			}
		}
		if len(matching) != 1 {
			t.Errorf("%d log lines name %s, want one:\n%s", len(matching), remote, strings.Join(matching, "\n"))
		}
		t.Logf("log line: %s", matching[0])
	})

	t.Run("SIGTERM exits 0 quickly", func(t *testing.T) {
		addr, _, cmd := startBinary(t, bin)
		c := mqtttest.Dial(t, addr)
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})

		start := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		c.ExpectClosed(5 * time.Second)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v, want status 0", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("still running 5s after SIGTERM")
		}
		t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	})
}

// startBinary starts bin on a free loopback port with debug logs and returns
// its MQTT address, its stderr lines after the "listening" one, and the
// command (killed at cleanup).
func startBinary(t *testing.T, bin string) (string, <-chan string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-http", "off", "-drain-timeout", "2s", "-log-format", "text", "-log-level", "debug")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	addrCh := make(chan string, 1)
	lines := make(chan string, 1024)
	go func() {
		re := regexp.MustCompile(`mqtt=(127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrCh <- m[1]
				break
			}
		}
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case addr := <-addrCh:
		return addr, lines, cmd
	case <-time.After(10 * time.Second):
		t.Fatal("no 'listening ... mqtt=host:port' log line within 10s")
		return "", nil, nil
	}
}

// TestBinary_DefaultHTTPPortTakenStillServesMQTT: when -http was not given
// and its default port is taken, the server still serves MQTT (with a
// warning); when -http was given, the conflict stops start-up naming it.
func TestBinary_DefaultHTTPPortTakenStillServesMQTT(t *testing.T) {
	bin := mqtttest.Binary(t, ".")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port, err := mqtttest.FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", port)

	explicit := exec.Command(bin, "-listen", mqttAddr, "-http", held.Addr().String())
	out, err := explicit.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-http") {
		t.Fatalf("explicit -http on a taken port: err %v, output %q; want a failure naming -http", err, out)
	}

	// Take the default port (:8080) unless something else already has it.
	if l, err := net.Listen("tcp", ":8080"); err == nil {
		defer l.Close()
	}
	implicit := exec.Command(bin, "-listen", mqttAddr)
	implicit.Env = append(os.Environ(), "MQTT_HTTP=") // empty counts as unset: the default applies
	var logs logbuf.Buffer
	implicit.Stderr = &logs
	if err := implicit.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = implicit.Process.Kill(); _ = implicit.Wait() }()
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := net.DialTimeout("tcp", mqttAddr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MQTT not served: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for !strings.Contains(logs.String(), "endpoint not served") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the default -http port: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
