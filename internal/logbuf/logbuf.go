// Package logbuf is a log's output held in memory for tests: a replica's
// logger, a child process's standard error. It imports nothing of the
// project, so that any package's own tests can use it.
package logbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is written by one goroutine and safe to read meanwhile. Its zero
// value keeps everything.
type Buffer struct {
	// Limit, when above 0, is how many bytes it keeps: later writes are
	// dropped (reported written), the start being what says why a
	// process stopped.
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p, or drops it past Limit.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit > 0 && b.buf.Len() > b.Limit {
		return len(p), nil
	}
	return b.buf.Write(p)
}

// String is everything kept so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the lines kept so far that contain every one of parts.
func (b *Buffer) Lines(parts ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}
