package redistopo

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// masterName is the name the sentinel monitors the master under.
const masterName = "mymaster"

// Sentinel is one redis-server master and one redis-sentinel watching it
// with quorum 1, owned by a test.
type Sentinel struct {
	master   *process
	sentinel *process
}

// StartSentinel runs a master and a sentinel on free ports and waits until
// the sentinel reports the master's address; t.Cleanup stops both.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	serverBin := lookPath(t, "redis-server")
	sentinelBin := lookPath(t, "redis-sentinel")
	dir := t.TempDir()

	master, err := startProcess(serverBin, dir, "master", 0, func(port int, _ []int) []string {
		return serverArgs(port, dir)
	})
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	s := &Sentinel{master: master}
	t.Cleanup(s.Stop)

	_, masterPort, _ := net.SplitHostPort(master.addr)
	s.sentinel, err = startProcess(sentinelBin, dir, "sentinel", 0, func(port int, _ []int) []string {
		// Sentinel rewrites its config file, so each attempt gets its own.
		cfg := filepath.Join(dir, "sentinel-"+strconv.Itoa(port)+".conf")
		if err := os.WriteFile(cfg, []byte(sentinelConfig(port, dir, masterPort)), 0o600); err != nil {
			t.Fatalf("redistopo: write sentinel config: %v", err)
		}
		return []string{cfg}
	})
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	if err := s.waitMasterKnown(); err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	return s
}

// sentinelConfig monitors the master at 127.0.0.1:masterPort. Quorum 1: one
// sentinel is enough to agree the master is down. Hostnames are not
// resolved, so the addresses go-redis receives are exactly these IPs.
func sentinelConfig(port int, dir, masterPort string) string {
	return strings.Join([]string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"dir " + dir,
		"daemonize no",
		"loglevel warning",
		"sentinel resolve-hostnames no",
		"sentinel monitor " + masterName + " 127.0.0.1 " + masterPort + " 1",
		"sentinel down-after-milliseconds " + masterName + " 2000",
		"sentinel failover-timeout " + masterName + " 10000",
	}, "\n") + "\n"
}

func (s *Sentinel) waitMasterKnown() error {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.sentinel.addr, MaxRetries: -1})
	defer c.Close()
	return waitFor(s.sentinel, func(ctx context.Context) error {
		got, err := c.GetMasterAddrByName(ctx, masterName).Result()
		if err != nil {
			return fmt.Errorf("sentinel get-master-addr-by-name: %w", err)
		}
		if addr := net.JoinHostPort(got[0], got[1]); addr != s.master.addr {
			return fmt.Errorf("sentinel reports master %s, want %s", addr, s.master.addr)
		}
		return nil
	})
}

// MasterName returns the name the sentinel knows the master by, for
// -redis-sentinel-master and redis.FailoverOptions.MasterName.
func (s *Sentinel) MasterName() string { return masterName }

// SentinelAddrs returns the sentinels' host:port addresses, for
// -redis-sentinel-addrs and redis.FailoverOptions.SentinelAddrs.
func (s *Sentinel) SentinelAddrs() []string { return []string{s.sentinel.addr} }

// MasterAddr returns the master's host:port.
func (s *Sentinel) MasterAddr() string { return s.master.addr }

// Stop kills the sentinel and the master. A second Stop is harmless.
func (s *Sentinel) Stop() {
	if s.sentinel != nil {
		s.sentinel.stop()
	}
	s.master.stop()
}
