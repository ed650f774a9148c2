package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
		fmt.Println(srv.Addr(), srv.dir)
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
	addr, dir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if addr == "" || dir == "" {
		t.Fatalf("the child test printed %q, want its server's address and directory", out)
	}
	// The crashed child left its temporary directory behind: t.TempDir's
	// <os.TempDir>/<test name><random>/001.
	if parent := filepath.Dir(dir); strings.HasPrefix(filepath.Base(parent), "TestStart_ServerDiesWithTestProcess") {
		t.Cleanup(func() { _ = os.RemoveAll(parent) })
	}
	deadline := time.Now().Add(5 * time.Second)
	for ping(addr) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server at %s still answers after its test process died", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
