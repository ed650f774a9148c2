package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestStart_AnswersPingAndRestartsOnSamePort(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("ping after Start: %v", err)
	}
	addr := s.Addr()
	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("ping after Restart: %v", err)
	}
	if got, want := s.URL(), "redis://"+addr; got != want {
		t.Fatalf("URL() = %q, want %q", got, want)
	}
	s.Stop()
	if err := ping(addr); err == nil {
		t.Fatal("server still answers PING after Stop")
	}
	s.Stop() // a second Stop is harmless
}

// TestStart_ServerDiesWithTestProcess: a test binary that crashes runs no
// cleanups; the redis-server it started must not outlive it.
func TestStart_ServerDiesWithTestProcess(t *testing.T) {
	if os.Getenv("REDISTEST_CRASH_CHILD") == "1" {
		srv := Start(t)
		fmt.Println(srv.Addr())
		os.Exit(3) // a crash: no cleanup runs
	}
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux only")
	}
	if _, err := exec.LookPath("redis-server"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("redis-server not installed")
	}
	child := exec.Command(os.Args[0], "-test.run", "^TestStart_ServerDiesWithTestProcess$")
	child.Env = append(os.Environ(), "REDISTEST_CRASH_CHILD=1")
	out, _ := child.Output()
	addr := strings.TrimSpace(string(out))
	if addr == "" {
		t.Fatal("the child test printed no address")
	}
	deadline := time.Now().Add(5 * time.Second)
	for ping(addr) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server at %s still answers after its test process died", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
