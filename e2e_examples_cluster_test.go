package main

// End-to-end test of examples/cluster/run.sh, the local cluster script.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// runShUpTimeout bounds run.sh's start-up: building the server, six Redis
// nodes joined into a cluster and synced, three replicas, HAProxy. It takes
// about 10 s on an idle machine; the bound leaves room for a loaded one.
const runShUpTimeout = 90 * time.Second

// runShUpLine is the last line run.sh prints once everything is up.
const runShUpLine = "Ctrl-C stops everything."

// TestExamples_ClusterScript_RedisCluster runs examples/cluster/run.sh with
// REDIS=cluster on free ports: a client connects through HAProxy, a QoS 1
// message published on replica3 reaches a subscriber on replica1 over the
// Redis Cluster, and SIGTERM to the script (a supervisor's stop, and what
// its Ctrl-C trap does) leaves none of the processes it started running:
// not the six redis-servers, the replicas nor HAProxy.
func TestExamples_ClusterScript_RedisCluster(t *testing.T) {
	for _, p := range [][2]string{{"redis-server", "redis-server"}, {"redis-cli", "redis-tools"}, {"haproxy", "haproxy"}, {"curl", "curl"}} {
		needProgram(t, p[0], p[1])
	}
	ports := holdFreePorts(t, 20)
	portList := func(ps []int) string {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = strconv.Itoa(p)
		}
		return strings.Join(s, " ")
	}
	lb, stats, replicas, https, redis, bus := ports[0], ports[1], ports[2:5], ports[5:8], ports[8:14], ports[14:20]

	out := filepath.Join(t.TempDir(), "run.sh.out")
	outFile, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd := exec.Command("bash", "examples/cluster/run.sh")
	cmd.Env = append(mqtttest.WithoutMQTTEnv(os.Environ()),
		"REDIS=cluster", "TLS_PORT=off",
		"LB_PORT="+strconv.Itoa(lb), "STATS_PORT="+strconv.Itoa(stats),
		"REPLICA_PORTS="+portList(replicas), "HTTP_PORTS="+portList(https),
		"REDIS_CLUSTER_PORTS="+portList(redis), "REDIS_CLUSTER_BUS_PORTS="+portList(bus),
		"STATE_DIR="+t.TempDir(),
	)
	cmd.Stdout, cmd.Stderr = outFile, outFile
	// Its own process group, so that whatever the script leaves behind can
	// be found, and killed if the test fails half-way.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The group is killed at the end unless it is known to be empty: then
	// its number may already be another process's.
	groupEmpty := false
	t.Cleanup(func() {
		if !groupEmpty {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		if t.Failed() {
			b, _ := os.ReadFile(out)
			t.Logf("run.sh output:\n%s", b)
		}
	})

	waitRunShUp(t, out, exited)
	waitConnack(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(lb)), unique(t, "lb"))

	replica := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(replicas[i])) }
	topic := unique(t, "runsh") + "/temp"
	sub := mqtttest.Dial(t, replica(0))
	sub.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30, ClientID: unique(t, "sub")})
	if codes := sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1}); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("SUBACK %v, want QoS 1 granted", codes)
	}
	pub := mqtttest.Dial(t, replica(2))
	pub.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30, ClientID: unique(t, "pub")})
	pub.PublishQoS1(1, topic, "21.5")
	if got := mqtttest.Expect[*packets.Publish](sub); got.Topic != topic || string(got.Payload) != "21.5" || got.QoS != 1 {
		t.Fatalf("replica1 got %q %q at QoS %d, want %q \"21.5\" at QoS 1", got.Topic, got.Payload, got.QoS, topic)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("run.sh after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run.sh still running 20s after SIGTERM")
	}
	if left := processGroup(t, pgid); len(left) > 0 {
		t.Errorf("processes run.sh started are still running: %s", strings.Join(left, "; "))
	} else {
		groupEmpty = true
	}
	for _, p := range redis {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second); err == nil {
			c.Close()
			t.Errorf("a Redis Cluster node still answers on port %d after run.sh exited", p)
		}
	}
}

// holdFreePorts returns n distinct free 127.0.0.1 ports, each held until
// all are picked.
func holdFreePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// waitRunShUp waits until run.sh, writing to out, says everything is up,
// and fails the test if it exits first.
func waitRunShUp(t *testing.T, out string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(runShUpTimeout)
	for {
		if b, _ := os.ReadFile(out); strings.Contains(string(b), runShUpLine) {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("run.sh exited before it was up: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("run.sh not up after %v", runShUpTimeout)
		}
	}
}

// waitConnack connects through HAProxy until a replica accepts: HAProxy
// sends clients to a replica once two health checks (1 s apart) passed.
func waitConnack(t *testing.T, addr, clientID string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(3 * waitTimeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = tryConnack(addr, clientID); err == nil {
			return
		}
	}
	t.Fatalf("no CONNACK through HAProxy at %s: %v", addr, err)
}

func tryConnack(addr, clientID string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	connect, err := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, KeepAlive: 30, ClientID: clientID})
	if err != nil {
		return err
	}
	if _, err := conn.Write(connect); err != nil {
		return err
	}
	p, err := packets.NewReader(conn, 0).ReadPacket()
	if err != nil {
		return err
	}
	if ack, ok := p.(*packets.Connack); !ok || ack.ReturnCode != packets.Accepted {
		return fmt.Errorf("got %T %+v, want an accepting CONNACK", p, p)
	}
	return nil
}

// processGroup lists the processes left in process group pgid, each as
// "pid command line", from /proc.
func processGroup(t *testing.T, pgid int) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the process has gone
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 3 || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		dir := filepath.Dir(path)
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		left = append(left, filepath.Base(dir)+" "+strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
	}
	return left
}
