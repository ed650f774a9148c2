package redistopo

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Replicated is a master with one replica, watched by one sentinel with
// quorum 1, owned by a test: killing the master makes the sentinel promote
// the replica. The replica can be paused (SIGSTOP) to make it lag.
type Replicated struct {
	master   *process
	replica  *process
	sentinel *process
}

// StartReplicated runs a master, a replica of it and a sentinel on free
// ports. The sentinel starts once the replica is in sync, so that its first
// look at the master finds the replica (it would otherwise learn of it
// only at its next INFO, up to 10 s later). It returns once the sentinel
// lists the replica as healthy; t.Cleanup stops all three.
func StartReplicated(t testing.TB) *Replicated {
	t.Helper()
	serverBin := lookPath(t, "redis-server")
	sentinelBin := lookPath(t, "redis-sentinel")
	dir := t.TempDir()

	r := &Replicated{}
	t.Cleanup(r.Stop)
	var err error
	r.master, err = startProcess(serverBin, dir, "master", 0, func(port int, _ []int) []string {
		return serverArgs(port, dir)
	})
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	masterHost, masterPort, _ := net.SplitHostPort(r.master.addr)
	r.replica, err = startProcess(serverBin, dir, "replica", 0, func(port int, _ []int) []string {
		return append(serverArgs(port, dir), "--replicaof", masterHost, masterPort)
	})
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	if err := r.waitReplicaSynced(); err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	r.sentinel, err = startProcess(sentinelBin, dir, "sentinel", 0, func(port int, _ []int) []string {
		cfg := filepath.Join(dir, "sentinel-"+strconv.Itoa(port)+".conf")
		if err := os.WriteFile(cfg, []byte(sentinelConfig(port, dir, masterPort)), 0o600); err != nil {
			t.Fatalf("redistopo: write sentinel config: %v", err)
		}
		return []string{cfg}
	})
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	if err := r.waitSentinelSeesReplica(); err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	return r
}

// waitReplicaSynced waits until the replica reports its link to the master
// up.
func (r *Replicated) waitReplicaSynced() error {
	c := redis.NewClient(&redis.Options{Addr: r.replica.addr, MaxRetries: -1})
	defer c.Close()
	return waitFor(r.replica, func(ctx context.Context) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("replica info replication: %w", err)
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica link to %s not up yet", r.master.addr)
		}
		return nil
	})
}

// waitSentinelSeesReplica waits until the sentinel knows the master and
// lists the replica with no flag but "slave".
func (r *Replicated) waitSentinelSeesReplica() error {
	c := redis.NewSentinelClient(&redis.Options{Addr: r.sentinel.addr, MaxRetries: -1})
	defer c.Close()
	return waitFor(r.sentinel, func(ctx context.Context) error {
		reps, err := c.Replicas(ctx, masterName).Result()
		if err != nil {
			return fmt.Errorf("sentinel replicas: %w", err)
		}
		for _, rep := range reps {
			if net.JoinHostPort(rep["ip"], rep["port"]) == r.replica.addr && rep["flags"] == "slave" {
				return nil
			}
		}
		return fmt.Errorf("sentinel does not list replica %s as healthy yet: %v", r.replica.addr, reps)
	})
}

// MasterName returns the name the sentinel knows the master by.
func (r *Replicated) MasterName() string { return masterName }

// SentinelAddrs returns the sentinel's host:port.
func (r *Replicated) SentinelAddrs() []string { return []string{r.sentinel.addr} }

// MasterAddr returns the first master's host:port.
func (r *Replicated) MasterAddr() string { return r.master.addr }

// ReplicaAddr returns the replica's host:port.
func (r *Replicated) ReplicaAddr() string { return r.replica.addr }

// PauseReplica stops the replica with SIGSTOP: it keeps its connections
// but reads nothing, so it falls behind the master.
func (r *Replicated) PauseReplica() error {
	if err := r.replica.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("redistopo: SIGSTOP replica: %w", err)
	}
	return nil
}

// ResumeReplica continues a paused replica with SIGCONT.
func (r *Replicated) ResumeReplica() error {
	if err := r.replica.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("redistopo: SIGCONT replica: %w", err)
	}
	return nil
}

// KillMaster kills the master with SIGKILL and waits for it to exit.
func (r *Replicated) KillMaster() { r.master.stop() }

// WaitPromoted waits until the sentinel names the replica as the master
// and the replica itself reports role:master.
func (r *Replicated) WaitPromoted() error {
	s := redis.NewSentinelClient(&redis.Options{Addr: r.sentinel.addr, MaxRetries: -1})
	defer s.Close()
	c := redis.NewClient(&redis.Options{Addr: r.replica.addr, MaxRetries: -1})
	defer c.Close()
	return waitFor(r.replica, func(ctx context.Context) error {
		got, err := s.GetMasterAddrByName(ctx, masterName).Result()
		if err != nil {
			return fmt.Errorf("sentinel get-master-addr-by-name: %w", err)
		}
		if addr := net.JoinHostPort(got[0], got[1]); addr != r.replica.addr {
			return fmt.Errorf("sentinel reports master %s, want the replica %s", addr, r.replica.addr)
		}
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("replica info replication: %w", err)
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("replica %s not master yet", r.replica.addr)
		}
		return nil
	})
}

// Stop kills the sentinel, the replica (paused or not) and the master. A
// second Stop is harmless.
func (r *Replicated) Stop() {
	if r.sentinel != nil {
		r.sentinel.stop()
	}
	if r.replica != nil {
		r.replica.stop()
	}
	if r.master != nil {
		r.master.stop()
	}
}
