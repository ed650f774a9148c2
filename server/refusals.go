package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// refusalMessages are the log lines of a refused connection, CONNECT,
// PUBLISH, will or SUBSCRIBE (written by session/ and the accept loop,
// at info or warn). A client can make the server write one per packet, so
// they go through a refusalLimiter; every other line passes untouched.
var refusalMessages = map[string]bool{
	"connection refused":                           true, // session: CONNECT refused (authentication, client id, protocol)
	"publish refused":                              true, // session: topic over a limit
	"publish refused by ACL":                       true,
	"will refused by ACL":                          true,
	"subscription refused":                         true, // session: invalid filter or over a limit
	"subscription refused by ACL":                  true,
	"websocket handshake refused":                  true, // listeners: no MQTT subprotocol, bad request
	"connection refused: -max-connections reached": true, // accept loop
}

// Refusal log limits: per client (its client id, or its address before
// CONNECT) at most refusalBurst lines per refusalWindow, and for every
// client together at most refusalGlobalBurst, so that clients that change
// their id on every attempt cannot flood the log either. Past a limit the
// lines are counted, and one summary line per client and window says how
// many were left out.
const (
	refusalWindow      = 10 * time.Second
	refusalBurst       = 5
	refusalGlobalBurst = 100
	// refusalMaxKeys bounds the clients tracked in one window; past it
	// the newest share one key, so memory stays bounded under a flood.
	refusalMaxKeys = 10000
)

// refusalLimiter counts refusal lines per key and window.
type refusalLimiter struct {
	every     time.Duration
	burst     int // lines per key and window
	globalMax int // lines per window, every key together
	keysMax   int
	now       func() time.Time
	root      slog.Handler // writes the global summary

	mu     sync.Mutex
	keys   map[string]*refusalCount
	global refusalCount
}

// refusalCount is one key's window: when it started, the lines written and
// those left out, and the handler (with the client's attributes) of the
// last line left out, which writes the summary.
type refusalCount struct {
	start      time.Time
	written    int
	suppressed int
	handler    slog.Handler
}

func newRefusalLimiter(root slog.Handler, every time.Duration, burst, globalBurst, maxKeys int) *refusalLimiter {
	return &refusalLimiter{
		every: every, burst: burst, globalMax: globalBurst, keysMax: maxKeys,
		now: time.Now, root: root, keys: make(map[string]*refusalCount),
	}
}

// summary is a window's left-out lines, to be logged by handler.
type summary struct {
	handler    slog.Handler
	suppressed int
}

// allow reports whether a refusal line of key may be written by h, and
// returns the summaries of windows that ended, to log first.
func (l *refusalLimiter) allow(key string, h slog.Handler) (bool, []summary) {
	now := l.now()
	var due []summary
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.global.start) >= l.every {
		if l.global.suppressed > 0 {
			due = append(due, summary{l.root, l.global.suppressed})
		}
		l.global = refusalCount{start: now}
	}
	c := l.keys[key]
	if c == nil && len(l.keys) >= l.keysMax {
		key = "" // the overflow key
		c = l.keys[key]
	}
	if c == nil {
		c = &refusalCount{start: now}
		l.keys[key] = c
	}
	if now.Sub(c.start) >= l.every {
		if c.suppressed > 0 {
			due = append(due, summary{c.handler, c.suppressed})
		}
		*c = refusalCount{start: now}
	}
	switch {
	case c.written >= l.burst:
		c.suppressed++
		c.handler = h
		return false, due
	case l.global.written >= l.globalMax:
		l.global.suppressed++ // in the global summary, with no client
		return false, due
	}
	c.written++
	l.global.written++
	return true, due
}

// sweep ends the windows that are over: it returns their summaries and
// forgets their keys.
func (l *refusalLimiter) sweep() []summary {
	now := l.now()
	var due []summary
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, c := range l.keys {
		if now.Sub(c.start) < l.every {
			continue
		}
		if c.suppressed > 0 {
			due = append(due, summary{c.handler, c.suppressed})
		}
		delete(l.keys, k)
	}
	if now.Sub(l.global.start) >= l.every && l.global.suppressed > 0 {
		due = append(due, summary{l.root, l.global.suppressed})
		l.global = refusalCount{start: now}
	}
	return due
}

// flush ends every window now, as at shutdown.
func (l *refusalLimiter) flush() []summary {
	l.mu.Lock()
	for _, c := range l.keys {
		c.start = time.Time{}
	}
	l.global.start = time.Time{}
	l.mu.Unlock()
	return l.sweep()
}

// logSummaries writes one line per window that left lines out.
func (l *refusalLimiter) logSummaries(ctx context.Context, due []summary) {
	for _, d := range due {
		r := slog.NewRecord(l.now(), slog.LevelInfo, "refusal log lines suppressed", 0)
		r.AddAttrs(slog.Int("suppressed", d.suppressed), slog.Duration("interval", l.every))
		if d.handler.Enabled(ctx, slog.LevelInfo) {
			_ = d.handler.Handle(ctx, r)
		}
	}
}

// run sweeps every window's length until ctx ends, then flushes.
func (l *refusalLimiter) run(ctx context.Context) {
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.logSummaries(context.Background(), l.sweep())
		case <-ctx.Done():
			l.logSummaries(context.Background(), l.flush())
			return
		}
	}
}

// refusalHandler is a slog.Handler that sends refusal lines through a
// refusalLimiter and everything else straight to inner. It learns the
// client's key from the attributes a logger is made With (a session's
// logger carries "client" and "remote").
type refusalHandler struct {
	inner  slog.Handler
	lim    *refusalLimiter
	client string
	remote string
}

// Enabled is inner's.
func (h *refusalHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle writes r unless it is a refusal line over its client's limit.
func (h *refusalHandler) Handle(ctx context.Context, r slog.Record) error {
	if !refusalMessages[r.Message] {
		return h.inner.Handle(ctx, r)
	}
	client, remote := h.client, h.remote
	if client == "" && remote == "" {
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "client":
				client = a.Value.String()
			case "remote":
				remote = a.Value.String()
			}
			return true
		})
	}
	key := "client:" + client
	if client == "" {
		// Before CONNECT: the client's host, whatever its port.
		host, _, err := net.SplitHostPort(remote)
		if err != nil {
			host = remote
		}
		key = "remote:" + host
	}
	ok, due := h.lim.allow(key, h.inner)
	h.lim.logSummaries(ctx, due)
	if !ok {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs keeps the client's id and address for the key.
func (h *refusalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	for _, a := range attrs {
		switch a.Key {
		case "client":
			c.client = a.Value.String()
		case "remote":
			c.remote = a.Value.String()
		}
	}
	return &c
}

// WithGroup is inner's group.
func (h *refusalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}
