package listeners

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// WebSocketPath is the HTTP path MQTT over WebSocket is served on, the one
// MQTT.js, Paho JavaScript, Mosquitto and EMQX use.
const WebSocketPath = "/mqtt"

// WebSocketSubprotocols are the Sec-WebSocket-Protocol values accepted, in
// order of preference: "mqtt" (MQTT 3.1.1 section 6, [MQTT-6.0.0-3]) and
// "mqttv3.1", which MQTT 3.1 clients (older Paho JavaScript) send.
var WebSocketSubprotocols = []string{"mqtt", "mqttv3.1"}

// webSocketMaxHeaderBytes bounds an upgrade request's headers: a browser's
// are a few hundred bytes, cookies of the page's site included.
const webSocketMaxHeaderBytes = 64 << 10

// WebSocketOptions configure a WebSocket listener.
type WebSocketOptions struct {
	// ReadLimit is the largest WebSocket message, in bytes, a client may
	// send; a frame or message beyond it closes the connection (status
	// 1009) once ReadLimit bytes have been read, so nothing larger is ever
	// held. It must be at least 1.
	ReadLimit int64
	// HandshakeTimeout bounds the HTTP side: reading an upgrade request's
	// headers, and an idle keep-alive connection between requests. A client
	// that connects and never upgrades is closed after it. Zero means no
	// bound.
	HandshakeTimeout time.Duration
	// TLS, when set, serves secure WebSocket (wss://): the listener
	// terminates TLS with this configuration and Protocol is "wss".
	TLS *tls.Config
	// Log receives refused handshakes (at info) and the HTTP server's own
	// errors (at debug); nil discards them.
	Log *slog.Logger
}

// WebSocket is a Listener for MQTT over WebSocket: an HTTP server on
// WebSocketPath whose upgraded connections are handed on as net.Conn over
// the stream of binary messages, so a session reads the same bytes it
// would over TCP. The connection's RemoteAddr is the client's address.
type WebSocket struct {
	ln       net.Listener
	srv      *http.Server
	protocol string
	opts     WebSocketOptions
	log      *slog.Logger

	conns     chan net.Conn
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
	served    chan struct{} // closed when the HTTP server has stopped
	serveErr  error         // why it stopped, valid once served is closed
}

// ListenWebSocket listens on addr (host:port; port 0 picks a free port) and
// serves MQTT over WebSocket on it.
func ListenWebSocket(addr string, o WebSocketOptions) (*WebSocket, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		// net.OpError already reads "listen tcp <addr>: <cause>".
		return nil, err
	}
	return NewWebSocket(ln, o)
}

// NewWebSocket serves MQTT over WebSocket on connections ln accepts (with
// o.TLS, after a TLS handshake); ln may be any net.Listener, a PROXY
// protocol one for instance, whose header the HTTP server reads in each
// connection's goroutine (net/http asks for RemoteAddr there, not in its
// accept loop). Close closes ln.
func NewWebSocket(ln net.Listener, o WebSocketOptions) (*WebSocket, error) {
	if err := o.check(); err != nil {
		_ = ln.Close()
		return nil, err
	}
	w := &WebSocket{
		ln:       ln,
		protocol: "ws",
		opts:     o,
		log:      o.Log,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		served:   make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	proxied := false
	if p, ok := ln.(interface{ Protocol() string }); ok {
		proxied = strings.HasPrefix(p.Protocol(), "proxy+")
	}
	// net/http retries an Accept error only when it is itself a temporary
	// net.Error; the listeners here wrap theirs with context.
	ln = retryableAccept{ln}
	w.ln = ln
	if o.TLS != nil {
		w.ln = tls.NewListener(ln, o.TLS)
		w.protocol = "wss"
	}
	if proxied {
		w.protocol = "proxy+" + w.protocol
	}
	// The pattern matches WebSocketPath alone; every other path is 404.
	mux := http.NewServeMux()
	mux.HandleFunc(WebSocketPath, w.upgrade)
	w.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: o.HandshakeTimeout,
		IdleTimeout:       o.HandshakeTimeout,
		// No WriteTimeout: net/http would leave it on the hijacked
		// connection, ending every WebSocket after it. The session sets
		// its own write deadlines.
		MaxHeaderBytes: webSocketMaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
		// The connection under the request, so that an upgraded one can
		// be closed for certain (wsConn.Close).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, rawConnKey{}, c)
		},
	}
	go func() {
		w.serveErr = w.srv.Serve(w.ln)
		close(w.served)
	}()
	return w, nil
}

func (o WebSocketOptions) check() error {
	if o.ReadLimit < 1 {
		return fmt.Errorf("websocket read limit %d: must be at least 1 byte", o.ReadLimit)
	}
	if o.HandshakeTimeout < 0 {
		return fmt.Errorf("websocket handshake timeout %s is negative", o.HandshakeTimeout)
	}
	return nil
}

// upgrade serves one HTTP request on WebSocketPath: it refuses a WebSocket
// handshake that offers no MQTT subprotocol (400, naming the ones
// accepted), lets the library answer any other bad request (426 for a plain
// GET, 405 for another method, 400 for a malformed handshake), and hands
// an upgraded connection to Accept.
func (w *WebSocket) upgrade(rw http.ResponseWriter, r *http.Request) {
	if isWebSocketHandshake(r) && negotiable(r) == "" {
		msg := fmt.Sprintf("MQTT over WebSocket needs subprotocol %s (header Sec-WebSocket-Protocol); offered: %q",
			strings.Join(WebSocketSubprotocols, " or "), strings.Join(r.Header.Values("Sec-WebSocket-Protocol"), ", "))
		w.log.Info("websocket handshake refused", "remote", r.RemoteAddr, "protocol", w.protocol, "reason", msg)
		http.Error(rw, msg, http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(rw, r, &websocket.AcceptOptions{
		Subprotocols: WebSocketSubprotocols,
		// Any page may connect: MQTT authenticates in CONNECT, never with
		// the browser's ambient credentials (cookies), so a cross-origin
		// page gains nothing a direct client does not have.
		InsecureSkipVerify: true,
		// Compression off: each connection would hold a flate window, and
		// the read limit must count bytes on the wire.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has written the HTTP error to the client.
		w.log.Info("websocket handshake refused", "remote", r.RemoteAddr, "protocol", w.protocol, "reason", err)
		return
	}
	// The request's context ends when this handler returns; the
	// connection lives until the session or Close ends it.
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	// NetConn turns the read limit off; it must be set after it.
	c.SetReadLimit(w.opts.ReadLimit)
	raw, _ := r.Context().Value(rawConnKey{}).(net.Conn)
	conn := &wsConn{Conn: nc, raw: raw}
	select {
	case w.conns <- conn:
	case <-w.done:
		_ = c.Close(websocket.StatusGoingAway, "server shutting down")
	}
}

// isWebSocketHandshake reports whether r asks for a WebSocket upgrade.
func isWebSocketHandshake(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "websocket") {
				return true
			}
		}
	}
	return false
}

// negotiable returns the first subprotocol r offers that is accepted, or "".
func negotiable(r *http.Request) string {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			for _, ok := range WebSocketSubprotocols {
				if p == ok {
					return p
				}
			}
		}
	}
	return ""
}

// Accept waits for the next upgraded WebSocket connection.
func (w *WebSocket) Accept() (net.Conn, error) {
	select {
	case c := <-w.conns:
		return c, nil
	case <-w.done:
		return nil, fmt.Errorf("accept %s %s: %w", w.protocol, w.ln.Addr(), net.ErrClosed)
	case <-w.served:
		err := w.serveErr
		if errors.Is(err, http.ErrServerClosed) {
			err = net.ErrClosed
		}
		return nil, fmt.Errorf("accept %s %s: %w", w.protocol, w.ln.Addr(), err)
	}
}

// Close stops listening and closes connections still in their HTTP
// handshake; a blocked Accept returns. Upgraded connections already handed
// on belong to their sessions and stay open.
func (w *WebSocket) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		if err := w.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			w.closeErr = fmt.Errorf("close %s listener %s: %w", w.protocol, w.ln.Addr(), err)
		}
	})
	return w.closeErr
}

// Addr is the address listened on, with the port chosen when it was 0.
func (w *WebSocket) Addr() net.Addr { return w.ln.Addr() }

// Protocol returns "ws", or "wss" when the listener terminates TLS;
// "proxy+ws" or "proxy+wss" over a PROXY protocol listener.
func (w *WebSocket) Protocol() string { return w.protocol }

// wsConn is a WebSocket connection as a net.Conn that behaves as a TCP
// one where the session relies on it: reads fail with an error wrapping
// os.ErrDeadlineExceeded once the read deadline has passed (the library
// reports a cancelled context), and Close does not block.
type wsConn struct {
	net.Conn
	raw          net.Conn     // the TCP (or TLS) connection under the WebSocket
	readDeadline atomic.Int64 // unix nanoseconds; 0 = none
	closeOnce    sync.Once
}

// rawConnKey is the request context key of the connection under it.
type rawConnKey struct{}

// closeHandshakeGrace is how long a closing WebSocket waits for the
// client's close frame before its connection is closed regardless.
const closeHandshakeGrace = 2 * time.Second

// Close ends the connection at once: blocked reads and writes return, and
// the WebSocket close handshake (a close frame, then up to 5 s for the
// client's) finishes in the background. The library's Close waits for
// that handshake, which would let a silent client hold up a drain or a
// session takeover for seconds.
//
// The library's handshake first reads out the rest of a frame the client
// was sending, however long that frame claimed to be and with no deadline:
// a client stopping in the middle of a frame announced at 2^40 bytes
// would keep the socket, and its goroutine, forever. After
// closeHandshakeGrace the connection under the WebSocket is closed,
// whatever the handshake is doing.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		go func() { _ = c.Conn.Close() }()
		if c.raw != nil {
			time.AfterFunc(closeHandshakeGrace, func() { _ = c.raw.Close() })
		}
	})
	return nil
}

// Read reads from the stream of binary messages.
func (c *wsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		if d := c.readDeadline.Load(); d != 0 && time.Now().UnixNano() >= d {
			err = fmt.Errorf("websocket read: %w (%w)", os.ErrDeadlineExceeded, err)
		}
	}
	return n, err
}

// SetReadDeadline sets the read deadline; a read still blocked when it
// passes closes the WebSocket (the library's behaviour).
func (c *wsConn) SetReadDeadline(t time.Time) error {
	c.storeReadDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets the read and write deadlines.
func (c *wsConn) SetDeadline(t time.Time) error {
	c.storeReadDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *wsConn) storeReadDeadline(t time.Time) {
	if t.IsZero() {
		c.readDeadline.Store(0)
		return
	}
	c.readDeadline.Store(t.UnixNano())
}

// retryableAccept hands net/http an Accept error that wraps a net.Error
// (too many open files, say) as a net.Error, so that its server waits and
// retries as it does on a bare TCP listener instead of stopping.
type retryableAccept struct{ net.Listener }

// Accept returns the inner listener's connection, or its error with the
// net.Error inside it visible to a type assertion.
func (l retryableAccept) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	var ne net.Error
	if err != nil && errors.As(err, &ne) {
		return nil, acceptError{err: err, ne: ne}
	}
	return conn, err
}

// acceptError is an Accept error that reports the Timeout and Temporary of
// the net.Error it wraps.
type acceptError struct {
	err error
	ne  net.Error
}

func (e acceptError) Error() string { return e.err.Error() }
func (e acceptError) Unwrap() error { return e.err }
func (e acceptError) Timeout() bool { return e.ne.Timeout() }

// Temporary is what net/http's accept loop asks.
//
//lint:ignore SA1019 net/http's Serve still decides on it.
func (e acceptError) Temporary() bool { return e.ne.Temporary() }
