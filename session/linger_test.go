package session

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bridgemq/server/packets/packetstest"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return server, client
}

// lingerClose half-closes a TCP connection (the client reads the end of
// the stream and may still write) while fewer than maxLingering linger;
// past that, or on a connection that cannot be half-closed, it leaves the
// close to its caller.
func TestLingerClose(t *testing.T) {
	for _, tt := range []struct {
		name    string
		pipe    bool  // net.Pipe: no half-close, as a WebSocket
		already int64 // connections lingering before
		lingers bool
	}{
		{"TCP below the bound", false, 0, true},
		{"TCP at the bound", false, maxLingering, false},
		{"no half-close", true, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := lingering.Load()
			lingering.Store(tt.already)
			defer lingering.Store(before)
			var server, client net.Conn
			if tt.pipe {
				server, client = net.Pipe()
				defer server.Close()
				defer client.Close()
			} else {
				server, client = tcpPair(t)
			}
			s := &Session{conn: server}
			if got := s.lingerClose(); got != tt.lingers {
				t.Fatalf("lingerClose() = %v, want %v", got, tt.lingers)
			}
			want := tt.already
			if tt.lingers {
				want++
			}
			if n := lingering.Load(); n != want {
				t.Fatalf("lingering %d, want %d", n, want)
			}
			if !tt.lingers {
				return
			}
			if _, err := client.Write(packetstest.Named("pingreq").Raw); err != nil {
				t.Fatalf("client write while the server lingers: %v", err)
			}
			_ = client.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("client read: %v, want the end of the stream", err)
			}
			deadline := time.Now().Add(closeLinger + 2*time.Second)
			for lingering.Load() != tt.already {
				if time.Now().After(deadline) {
					t.Fatalf("still lingering %s after closeLinger", closeLinger+2*time.Second)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
