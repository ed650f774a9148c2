// Package redistopo runs the Redis topologies a replica can be pointed at,
// other than a single server (see internal/redistest for that): a master
// watched by Sentinel, and a six-node Redis Cluster. Every process listens on
// a free 127.0.0.1 port, keeps its files in the test's temporary directory,
// has persistence off, and is stopped when the test ends.
//
// Without redis-server (and redis-sentinel or redis-cli where needed) a test
// is skipped, or fails when the environment variable CI is "true".
package redistopo

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
)

// waitTimeout bounds every wait: a process answering PING, Sentinel learning
// its master, a cluster reaching cluster_state:ok.
const waitTimeout = 20 * time.Second

// startAttempts is how often a process is restarted on fresh ports when it
// dies at start-up (a free port found by binding and releasing it can be
// taken by someone else before the server binds it).
const startAttempts = 3

// lookPath finds bin, or skips the test (fails it when CI is "true").
func lookPath(t testing.TB, bin string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redistopo: %s not found in PATH: %v", bin, err)
		}
		t.Skipf("redistopo: %s not found in PATH (install redis-server, redis-sentinel and redis-tools to run this test): %v", bin, err)
	}
	return path
}

// process is one redis-server or redis-sentinel owned by a test.
type process struct {
	addr   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed when the process has exited
	err    error         // exit status, valid once exited is closed

	stopOnce sync.Once
}

// startProcess runs bin with args built for a fresh free port (and
// extraPorts more free ports), waits until it answers PING, and retries on
// new ports if it dies at start-up.
func startProcess(bin, dir, name string, extraPorts int, args func(port int, extra []int) []string) (*process, error) {
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		ports, err := freePorts(1 + extraPorts)
		if err != nil {
			return nil, err
		}
		p, err := launch(bin, filepath.Join(dir, name+".log"), ports[0], args(ports[0], ports[1:]))
		if err == nil {
			return p, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("start %s: %w", name, lastErr)
}

func launch(bin, logPath string, port int, args []string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	redistest.DieWithTest(cmd)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	p := &process{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		cmd:    cmd,
		log:    logPath,
		exited: make(chan struct{}),
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitPing(); err != nil {
		p.stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; output:\n%s", err, out)
	}
	return p, nil
}

func (p *process) waitPing() error {
	c := redis.NewClient(&redis.Options{Addr: p.addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	return waitFor(p, func(ctx context.Context) error { return c.Ping(ctx).Err() })
}

// waitFor retries check until it succeeds, p exits, or waitTimeout passes.
func waitFor(p *process, check func(ctx context.Context) error) error {
	deadline := time.Now().Add(waitTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v", p.addr, p.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		lastErr = check(ctx)
		cancel()
		if lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: not ready after %s: %w", p.addr, waitTimeout, lastErr)
}

// stop kills the process and waits for it; persistence is off, so nothing
// is lost that a test could want.
func (p *process) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
}

// alive reports whether the process is still running.
func (p *process) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// serverArgs are the redis-server arguments every node shares: loopback
// only, no RDB or AOF files, files under dir.
func serverArgs(port int, dir string) []string {
	return []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--loglevel", "warning",
	}
}

func freePorts(n int) ([]int, error) {
	// Hold every listener until all are chosen, so the ports are distinct.
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
