package mqtttest

import (
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
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/server"
)

// ProcStartTimeout bounds how long a replica process may take to answer
// /readyz with 200.
const ProcStartTimeout = 15 * time.Second

// procLogTail is how many lines of a replica's output a failed test prints.
const procLogTail = 40

// Process is one replica running as a child process, for the tests that
// must kill one the hard way: a SIGKILLed process drains nothing, clears no
// will and leaves its records in Redis for a surviving replica to find.
type Process struct {
	node    string
	addr    string // MQTT listener, host:port
	http    string // health endpoint, host:port
	logPath string

	// Cmd is the running server, for tests that signal it (SIGSTOP) or
	// read its resource use.
	Cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
}

// Node is the replica's -node-id.
func (p *Process) Node() string { return p.node }

// Addr is the replica's MQTT address, host:port.
func (p *Process) Addr() string { return p.addr }

// HTTPAddr is the replica's health and metrics address, host:port.
func (p *Process) HTTPAddr() string { return p.http }

// URL is the replica's address as a Paho broker URL.
func (p *Process) URL() string { return "tcp://" + p.addr }

// Backend is the replica as HAProxy sees it.
func (p *Process) Backend() haproxytest.Backend {
	return haproxytest.Backend{MQTT: p.addr, HTTP: p.http}
}

// Exited is closed once the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Kill sends SIGKILL and waits until the process is gone.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("replica %s still running 5s after SIGKILL", p.node)
	}
}

// LogTail returns the last n lines the process wrote.
func (p *Process) LogTail(n int) string {
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

// StartProcess runs the server binary (built from the repository root, the
// test's working directory) as replica node on the Redis at redisURL (none
// when empty: args name it, e.g. -redis-cluster), with
// -node-ttl 2s and extra flags args, on free loopback ports, waits until
// /readyz answers 200 and kills the process at cleanup. If the test failed,
// the tail of the replica's output is logged.
func StartProcess(t testing.TB, redisURL, node string, args ...string) *Process {
	t.Helper()
	bin := Binary(t, ".")
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

func launch(t testing.TB, bin, redisURL, node string, args []string) (*Process, error) {
	// Both ports are picked while both are held: picked one after the
	// other, the kernel may hand out the same port twice, and the replica
	// then refuses -http on the port of -listen.
	ports, err := freeLoopbackPorts(2)
	if err != nil {
		return nil, err
	}
	mqttPort, httpPort := ports[0], ports[1]
	p := &Process{
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
	all := []string{"-listen", p.addr, "-http", p.http, "-node-id", node, "-node-ttl", "2s", "-log-level", "debug"}
	if redisURL != "" {
		all = append(all, "-redis-url", redisURL)
	}
	all = append(all, args...)
	p.Cmd = exec.Command(bin, all...)
	redistest.DieWithTest(p.Cmd)
	p.Cmd.Stdout, p.Cmd.Stderr = logFile, logFile
	p.Cmd.Env = WithoutMQTTEnv(os.Environ())
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = p.Cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(); err != nil {
		_ = p.Cmd.Process.Kill()
		<-p.exited
		tail := p.LogTail(procLogTail)
		if strings.Contains(tail, "address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, fmt.Errorf("%w; output:\n%s", err, tail)
	}
	t.Cleanup(func() {
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			t.Logf("replica %s (%s), last %d lines of output:\n%s", node, p.addr, procLogTail, p.LogTail(procLogTail))
		}
	})
	return p, nil
}

// waitReady polls /readyz until it answers 200, the process exits or
// ProcStartTimeout passes.
func (p *Process) waitReady() error {
	deadline := time.Now().Add(ProcStartTimeout)
	client := http.Client{Timeout: 3 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + p.http + "/readyz")
		code := 0
		if err == nil {
			code = resp.StatusCode
			_ = resp.Body.Close()
			if code == http.StatusOK {
				return nil
			}
		}
		last = fmt.Sprintf("status %d, err %v", code, err)
		select {
		case <-p.exited:
			return fmt.Errorf("replica %s exited before it was ready (last /readyz: %s)", p.node, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("replica %s not ready after %s (last /readyz: %s)", p.node, ProcStartTimeout, last)
}

// WithoutMQTTEnv drops MQTT_* variables, which the server reads as flags,
// so the caller's environment cannot change a test replica's configuration.
func WithoutMQTTEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, server.EnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

// FreeLoopbackPort asks the kernel for a free port on 127.0.0.1.
func FreeLoopbackPort() (int, error) {
	ports, err := freeLoopbackPorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freeLoopbackPorts asks the kernel for n distinct free ports on 127.0.0.1,
// holding each until all are picked.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
