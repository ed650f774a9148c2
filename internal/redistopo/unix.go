package redistopo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
)

// Unix is a redis-server listening on a Unix domain socket only (no TCP
// port), owned by a test.
type Unix struct {
	proc *process
	sock string
}

// StartUnix runs redis-server with --port 0 and --unixsocket in a fresh
// short directory (a socket path is limited to about 100 bytes, and a test's
// TempDir can be longer), waits until it answers PING on the socket, and
// stops it at cleanup.
func StartUnix(t testing.TB) *Unix {
	t.Helper()
	bin := lookPath(t, "redis-server")
	dir, err := os.MkdirTemp("", "rtu")
	if err != nil {
		t.Fatalf("redistopo: socket directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "r.sock")
	args := append(serverArgs(0, dir), "--unixsocket", sock, "--unixsocketperm", "700")
	p, err := launchChecked(bin, filepath.Join(dir, "redis.log"), sock, args,
		&redis.Options{Network: "unix", Addr: sock})
	if err != nil {
		t.Fatalf("redistopo: unix socket server: %v", err)
	}
	u := &Unix{proc: p, sock: sock}
	t.Cleanup(u.Stop)
	return u
}

// Path returns the socket's file name.
func (u *Unix) Path() string { return u.sock }

// URL returns the server as a unix:// URL for -redis-url.
func (u *Unix) URL() string { return "unix://" + u.sock }

// Stop kills the server. A second Stop is harmless.
func (u *Unix) Stop() { u.proc.stop() }

// launchChecked runs bin with args and waits until a client built from opts
// answers PING, for servers that launch cannot reach with a plain TCP
// client (a Unix socket, TLS). addr names the process in messages.
func launchChecked(bin, logPath, addr string, args []string, opts *redis.Options) (*process, error) {
	p, err := launchProcess(bin, logPath, addr, args)
	if err != nil {
		return nil, err
	}
	o := *opts
	o.DialTimeout, o.MaxRetries = time.Second, -1
	c := redis.NewClient(&o)
	defer c.Close()
	if err := waitFor(p, func(ctx context.Context) error { return c.Ping(ctx).Err() }); err != nil {
		p.stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; output:\n%s", err, out)
	}
	return p, nil
}

// launchProcess starts bin with its output in logPath and reaps it when it
// exits.
func launchProcess(bin, logPath, addr string, args []string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	redistest.DieWithTest(cmd)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	p := &process{addr: addr, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}
