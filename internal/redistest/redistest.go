// Package redistest runs a throwaway redis-server for tests: one process per
// test on a free 127.0.0.1 port, with persistence off, stopped when the test
// ends. Restart kills it and starts it again on the same port, so that tests
// can cut every client connection and watch the clients recover.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/logbuf"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	bin  string
	port int
	dir  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives the process's exit once
}

// Start launches redis-server on a free port and waits until it answers
// PING; t.Cleanup stops it. Without a redis-server binary the test is skipped,
// or fails when the environment variable CI is "true".
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redistest: redis-server not found in PATH: %v", err)
		}
		t.Skipf("redistest: redis-server not found in PATH (install redis-server to run this test): %v", err)
	}
	s := &Server{bin: bin, dir: t.TempDir()}
	// A port found free may be taken by another process before
	// redis-server binds it (other test binaries and servers run beside
	// this one): that one cause is retried, on a new port.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.port = port
		err = s.start()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			t.Fatalf("redistest: %v", err)
		}
		t.Logf("redistest: %v; trying another port", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// errPortTaken is redis-server refusing its port: another process bound
// it first.
var errPortTaken = errors.New("port taken by another process")

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns the server's address as a redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Restart kills the server (SIGKILL, so no client gets a clean goodbye) and
// starts a fresh one on the same port. Persistence is off, so the new server
// starts empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	// The port may linger briefly after the kill; retry until it is free.
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit. It is safe to call more
// than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	out := logbuf.Buffer{Limit: 64 << 10} // enough to say why it stopped
	cmd.Stdout, cmd.Stderr = &out, &out
	DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(startTimeout)
	for {
		if ping(s.Addr()) == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case err := <-exited:
			if strings.Contains(out.String(), "Address already in use") {
				return fmt.Errorf("redis-server on port %d: %w", s.port, errPortTaken)
			}
			return fmt.Errorf("redis-server on port %d exited: %v: %s", s.port, err, strings.TrimSpace(out.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %d did not answer PING within %v", s.port, startTimeout)
		}
	}
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
