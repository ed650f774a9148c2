package redistest

import (
	"testing"
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
