package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bridgemq/server/bridge/pattern"
)

// barrierTimeout bounds the wait for a subscription to take effect.
const barrierTimeout = 5 * time.Second

// expect records subscribe confirmations this replica is about to ask for,
// so that the reader can tell them from a reconnect's re-subscriptions.
func (r *Redis) expect(names []string) {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	for _, n := range names {
		r.expected[n]++
	}
}

// confirmed consumes an expected confirmation for name.
func (r *Redis) confirmed(name string) bool {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	n := r.expected[name]
	if n == 0 {
		return false
	}
	if n == 1 {
		delete(r.expected, name)
	} else {
		r.expected[name] = n - 1
	}
	return true
}

func (r *Redis) pong(token string) { r.signal(r.pongs, token) }

// waitFor registers a channel that signal(waiters, token) closes; done
// unregisters it.
func (r *Redis) waitFor(waiters map[string]chan struct{}, token string) (ch chan struct{}, done func()) {
	ch = make(chan struct{})
	r.waitMu.Lock()
	waiters[token] = ch
	r.waitMu.Unlock()
	return ch, func() {
		r.waitMu.Lock()
		delete(waiters, token)
		r.waitMu.Unlock()
	}
}

// signal wakes the waiter registered for token in waiters, if any.
func (r *Redis) signal(waiters map[string]chan struct{}, token string) {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	if ch, ok := waiters[token]; ok {
		close(ch)
		delete(waiters, token)
	}
}

// barrier returns once every command sent on the subscription connection
// before it has taken effect: Redis answers one connection's commands in
// order, so the reply to a PING sent now comes after every earlier
// SUBSCRIBE is in place.
func (r *Redis) barrier(ctx context.Context) error {
	token := "barrier:" + randomToken()
	ch, done := r.waitFor(r.pongs, token)
	defer done()
	if err := r.ps.Ping(ctx, token); err != nil {
		return unavailable("subscription barrier", err)
	}
	t := time.NewTimer(barrierTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return fmt.Errorf("subscription barrier: no reply in %v: %w", barrierTimeout, ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("subscription barrier: %w", ctx.Err())
	}
}

// applyChange issues the Redis commands of c, subscriptions first so that
// nothing falls between them; psMu is held by the caller.
func (r *Redis) applyChange(ctx context.Context, c pattern.Change) error {
	if c.Empty() {
		return nil
	}
	var errs []error
	if len(c.Subscribe) > 0 {
		r.expect(c.Subscribe)
		errs = append(errs, r.ps.Subscribe(ctx, c.Subscribe...))
	}
	if len(c.PSubscribe) > 0 {
		r.expect(c.PSubscribe)
		errs = append(errs, r.ps.PSubscribe(ctx, c.PSubscribe...))
	}
	if len(c.Unsubscribe) > 0 {
		errs = append(errs, r.ps.Unsubscribe(ctx, c.Unsubscribe...))
	}
	if len(c.PUnsubscribe) > 0 {
		errs = append(errs, r.ps.PUnsubscribe(ctx, c.PUnsubscribe...))
	}
	if err := errors.Join(errs...); err != nil {
		// go-redis keeps the names and re-subscribes them on reconnect.
		return unavailable("update redis subscriptions", err)
	}
	return nil
}
