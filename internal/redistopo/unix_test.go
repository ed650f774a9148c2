package redistopo

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestStartUnix_SocketOnly checks that the server answers on its socket
// through a unix:// URL, as -redis-url uses it, and has no TCP port.
func TestStartUnix_SocketOnly(t *testing.T) {
	u := StartUnix(t)
	if len(u.Path()) > 100 {
		t.Fatalf("socket path %q is %d bytes, too long for sun_path", u.Path(), len(u.Path()))
	}
	opts, err := redis.ParseURL(u.URL() + "?db=2")
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", u.URL(), err)
	}
	if opts.Network != "unix" || opts.Addr != u.Path() || opts.DB != 2 {
		t.Fatalf("ParseURL: network %q addr %q db %d; want unix %q 2", opts.Network, opts.Addr, opts.DB, u.Path())
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET over the socket: %v", err)
	}
	ports, err := c.ConfigGet(ctx, "port").Result()
	if err != nil {
		t.Fatalf("CONFIG GET port: %v", err)
	}
	if ports["port"] != "0" {
		t.Fatalf("port %q, want 0 (no TCP listener)", ports["port"])
	}
	if conn, err := net.DialTimeout("unix", u.Path(), time.Second); err != nil {
		t.Fatalf("dial socket: %v", err)
	} else {
		conn.Close()
	}
}
