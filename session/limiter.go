package session

import (
	"sync"
	"sync/atomic"
)

// ByteLimiter bounds the bytes of inbound PUBLISH packets a replica has read
// from its clients and the bridge has not yet accepted (-max-inflight-bytes).
// A connection takes the size of a PUBLISH body from it before reading the
// body and gives it back once the bridge has answered; while the bound is
// reached its read loop waits, so the client's bytes stay in the kernel's
// socket buffers and TCP flow control slows the client down, rather than
// the replica buffering them. Waiters are served in arrival order, so no
// publisher starves another. Safe for concurrent use.
type ByteLimiter struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiters []*byteWaiter

	// Waits counts acquisitions that had to wait.
	Waits atomic.Int64
}

type byteWaiter struct {
	n     int64
	ready chan struct{} // closed once the bytes are granted
}

// NewByteLimiter returns a limiter of limit bytes; limit ≤ 0 means none
// (nil, whose methods do nothing).
func NewByteLimiter(limit int64) *ByteLimiter {
	if limit <= 0 {
		return nil
	}
	return &ByteLimiter{limit: limit}
}

// Used returns the bytes currently taken.
func (l *ByteLimiter) Used() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used
}

// Acquire takes n bytes, waiting until they fit; a request larger than the
// whole limit waits until nothing else is taken. It returns the bytes taken
// (what Release must give back; 0 when it gave up) and whether it waited.
// It gives up when stop is closed.
func (l *ByteLimiter) Acquire(n int64, stop <-chan struct{}) (taken int64, waited bool) {
	if l == nil || n <= 0 {
		return 0, false
	}
	n = min(n, l.limit)
	l.mu.Lock()
	if len(l.waiters) == 0 && l.used+n <= l.limit {
		l.used += n
		l.mu.Unlock()
		return n, false
	}
	w := &byteWaiter{n: n, ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	l.Waits.Add(1)
	select {
	case <-w.ready:
		return n, true
	case <-stop:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-w.ready: // granted meanwhile: give it back
		l.used -= n
	default:
		for i, o := range l.waiters {
			if o == w {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				break
			}
		}
	}
	l.grantLocked()
	return 0, true
}

// Release gives back n bytes taken by Acquire.
func (l *ByteLimiter) Release(n int64) {
	if l == nil || n <= 0 {
		return
	}
	l.mu.Lock()
	l.used -= n
	l.grantLocked()
	l.mu.Unlock()
}

// grantLocked wakes the waiters at the head of the line that now fit.
// l.mu is held.
func (l *ByteLimiter) grantLocked() {
	for len(l.waiters) > 0 {
		w := l.waiters[0]
		if l.used+w.n > l.limit {
			return
		}
		l.used += w.n
		close(w.ready)
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
	}
}
