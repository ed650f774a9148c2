package main

// Replicas as real processes, for the fault tests that must kill one the
// hard way: a SIGKILLed process drains nothing, clears no will and leaves its
// records in Redis for a surviving replica to find. The in-process replicas
// of harness_test.go cannot die like that.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/server"
)

// procStartTimeout bounds how long a replica process may take to answer
// /readyz with 200.
const procStartTimeout = 15 * time.Second

// procLogTail is how many lines of a replica's output a failed test prints.
const procLogTail = 40

// procReplica is one replica running as a child process.
type procReplica struct {
	node    string
	addr    string // MQTT listener, host:port
	http    string // health endpoint, host:port
	logPath string

	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
}

// URL is the replica's address as a Paho broker URL.
func (p *procReplica) URL() string { return "tcp://" + p.addr }

// Backend is the replica as HAProxy sees it.
func (p *procReplica) Backend() haproxytest.Backend {
	return haproxytest.Backend{MQTT: p.addr, HTTP: p.http}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *procReplica) Kill(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("replica %s still running 5s after SIGKILL", p.node)
	}
}

// logTail returns the last n lines the process wrote.
func (p *procReplica) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startProcReplica runs the server binary as replica node on the Redis at
// redisURL, with -node-ttl 2s and extra flags args, on free loopback ports,
// waits until /readyz answers 200 and kills the process at cleanup. If the
// test failed, the tail of the replica's output is logged.
func startProcReplica(t testing.TB, redisURL, node string, args ...string) *procReplica {
	t.Helper()
	bin := mqtttest.Binary(t, ".")
	// A free port is found by binding and releasing it, so another process
	// may take it first; a replica that cannot bind is started again.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := launch(t, bin, redisURL, node, args)
		if err == nil {
			return p
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("replica %s: %v", node, lastErr)
	return nil
}

// errPortTaken means the replica exited because a port it was given was
// taken in the meantime.
var errPortTaken = errors.New("port taken")

func launch(t testing.TB, bin, redisURL, node string, args []string) (*procReplica, error) {
	mqttPort, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	p := &procReplica{
		node:    node,
		addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(mqttPort)),
		http:    net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		logPath: filepath.Join(t.TempDir(), node+".log"),
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("replica log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	all := append([]string{
		"-listen", p.addr, "-http", p.http, "-redis-url", redisURL,
		"-node-id", node, "-node-ttl", "2s", "-log-level", "debug",
	}, args...)
	p.cmd = exec.Command(bin, all...)
	redistest.DieWithTest(p.cmd)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = withoutMQTTEnv(os.Environ())
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(); err != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
		tail := p.logTail(procLogTail)
		if strings.Contains(tail, "address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, fmt.Errorf("%w; output:\n%s", err, tail)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			t.Logf("replica %s (%s), last %d lines of output:\n%s", node, p.addr, procLogTail, p.logTail(procLogTail))
		}
	})
	return p, nil
}

// waitReady polls /readyz until it answers 200, the process exits or
// procStartTimeout passes.
func (p *procReplica) waitReady() error {
	deadline := time.Now().Add(procStartTimeout)
	var last string
	for time.Now().Before(deadline) {
		code, err := httpStatus(p.http, "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("status %d, err %v", code, err)
		select {
		case <-p.exited:
			return fmt.Errorf("replica %s exited before it was ready (last /readyz: %s)", p.node, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("replica %s not ready after %s (last /readyz: %s)", p.node, procStartTimeout, last)
}

// withoutMQTTEnv drops MQTT_* variables, which the server reads as flags,
// so the caller's environment cannot change a test replica's configuration.
func withoutMQTTEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, server.EnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

// httpStatus GETs http://addr+path and returns the status code.
func httpStatus(addr, path string) (int, error) {
	code, _, err := httpGet(addr, path)
	return code, err
}

// httpGet GETs http://addr+path with a bounded timeout and returns the
// status code and body.
func httpGet(addr, path string) (int, []byte, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("GET %s%s body: %w", addr, path, err)
	}
	return resp.StatusCode, body.Bytes(), nil
}

// freeLoopbackPort asks the kernel for a free port on 127.0.0.1.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
