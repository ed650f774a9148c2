package session

import (
	"testing"
	"time"
)

// The limiter never lets more than its limit be taken, serves waiters in
// arrival order, lets a request larger than the limit through alone, and
// gives up (taking nothing) when told to stop.
func TestByteLimiter_BoundsFIFOAndStop(t *testing.T) {
	l := NewByteLimiter(100)
	if n, waited := l.Acquire(60, nil); n != 60 || waited {
		t.Fatalf("first acquire = %d, %v", n, waited)
	}
	order := make(chan int, 2)
	for i, n := range []int64{50, 30} {
		go func() {
			got, _ := l.Acquire(n, nil)
			order <- i
			_ = got
		}()
		deadline := time.Now().Add(5 * time.Second)
		for {
			l.mu.Lock()
			queued := len(l.waiters)
			l.mu.Unlock()
			if queued == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("waiter not queued")
			}
			time.Sleep(time.Millisecond)
		}
	}
	// 30 would fit beside 60, but 50 came first: both wait.
	select {
	case i := <-order:
		t.Fatalf("waiter %d got through past the limit or out of order", i)
	case <-time.After(20 * time.Millisecond):
	}
	l.Release(60)
	<-order
	<-order
	if u := l.Used(); u != 80 {
		t.Fatalf("used %d, want 80", u)
	}
	stop := make(chan struct{})
	got := make(chan int64, 1)
	go func() { n, _ := l.Acquire(1000, stop); got <- n }() // clamped to 100: waits for 0 used
	close(stop)
	if n := <-got; n != 0 {
		t.Fatalf("stopped acquire took %d", n)
	}
	l.Release(80)
	if n, _ := l.Acquire(1000, nil); n != 100 || l.Used() != 100 {
		t.Fatalf("an oversized request took %d (used %d), want the whole limit", n, l.Used())
	}
	var none *ByteLimiter
	if n, w := none.Acquire(5, nil); n != 0 || w {
		t.Fatal("a nil limiter limited")
	}
}
