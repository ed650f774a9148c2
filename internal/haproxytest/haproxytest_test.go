package haproxytest

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeReplica is a TCP server that greets each connection with its name and
// then echoes, plus an HTTP /readyz whose answer the test switches.
type fakeReplica struct {
	name  string
	tcp   net.Listener
	http  *http.Server
	httpL net.Listener
	ready atomic.Bool
}

func startFakeReplica(t *testing.T, name string) *fakeReplica {
	t.Helper()
	r := &fakeReplica{name: name}
	r.ready.Store(true)
	var err error
	if r.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go r.serveTCP()
	if r.httpL, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if r.ready.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	r.http = &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = r.http.Serve(r.httpL) }()
	t.Cleanup(func() {
		r.tcp.Close()
		r.http.Close()
	})
	return r
}

func (r *fakeReplica) serveTCP() {
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := c.Write([]byte(r.name + "\n")); err != nil {
				return
			}
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

func (r *fakeReplica) backend() Backend {
	return Backend{MQTT: r.tcp.Addr().String(), HTTP: r.httpL.Addr().String()}
}

// dialThrough connects through the proxy, reads the greeting naming the
// backend that got the connection, and checks that bytes echo end to end.
func dialThrough(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(c)
	name, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting through proxy: %v", err)
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write through proxy: %v", err)
	}
	echo, err := rd.ReadString('\n')
	if err != nil || echo != "ping\n" {
		t.Fatalf("echo through proxy = %q, %v; want \"ping\\n\"", echo, err)
	}
	return strings.TrimSpace(name)
}

func countBackends(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		got[dialThrough(t, addr)]++
	}
	return got
}

func TestStart_RoundRobinReachesEveryBackend(t *testing.T) {
	a, b := startFakeReplica(t, "a"), startFakeReplica(t, "b")
	h := Start(t, []Backend{a.backend(), b.backend()})
	// Start returns once one server has passed a check; wait for both, so
	// the rotation holds both.
	h.WaitServer(t, 0, true)
	h.WaitServer(t, 1, true)

	got := countBackends(t, h.Addr(), 6)
	if got["a"] != 3 || got["b"] != 3 {
		t.Fatalf("6 connections through roundrobin went %v, want 3 to a and 3 to b", got)
	}
}

func TestStart_UnreadyBackendStopsGettingConnections(t *testing.T) {
	a, b := startFakeReplica(t, "a"), startFakeReplica(t, "b")
	h := Start(t, []Backend{a.backend(), b.backend()})
	h.WaitServer(t, 1, true)

	b.ready.Store(false) // /readyz answers 503, as a draining replica does
	h.WaitServer(t, 1, false)
	if got := countBackends(t, h.Addr(), 6); got["a"] != 6 {
		t.Fatalf("with b unready, 6 connections went %v, want all to a", got)
	}
	servers, err := h.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if servers[1].CheckStatus != "L7STS" {
		t.Fatalf("check status of unready b = %q, want L7STS (a non-200 answer)", servers[1].CheckStatus)
	}

	b.ready.Store(true) // rise 1: one good check brings it back
	h.WaitServer(t, 1, true)
	if got := countBackends(t, h.Addr(), 4); got["b"] == 0 {
		t.Fatalf("after b became ready again, 4 connections went %v, want some to b", got)
	}
}

func TestStart_DeadBackendLeavesRotation(t *testing.T) {
	a, b := startFakeReplica(t, "a"), startFakeReplica(t, "b")
	h := Start(t, []Backend{a.backend(), b.backend()})
	h.WaitServer(t, 0, true)

	a.tcp.Close() // the replica process is gone: nothing answers either port
	a.http.Close()
	h.WaitServer(t, 0, false)
	if got := countBackends(t, h.Addr(), 4); got["b"] != 4 {
		t.Fatalf("with a dead, 4 connections went %v, want all to b", got)
	}
}

func TestStop_ClosesFrontendAndIsIdempotent(t *testing.T) {
	a := startFakeReplica(t, "a")
	h := Start(t, []Backend{a.backend()})
	addr := h.Addr()
	h.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("frontend %s still accepts after Stop", addr)
	}
	h.Stop()
}

func TestConfig_IsAcceptedByHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skipf("haproxy not found: %v", err)
	}
	tests := []struct {
		name     string
		backends []Backend
	}{
		{"one backend", []Backend{{MQTT: "127.0.0.1:1884", HTTP: "127.0.0.1:8081"}}},
		{"three backends", []Backend{
			{MQTT: "127.0.0.1:1884", HTTP: "127.0.0.1:8081"},
			{MQTT: "127.0.0.1:1885", HTTP: "127.0.0.1:8082"},
			{MQTT: "127.0.0.1:1886", HTTP: "127.0.0.1:8083"},
		}},
		{"http without host checks loopback", []Backend{{MQTT: "127.0.0.1:1884", HTTP: ":8081"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := Config("127.0.0.1:1883", filepath.Join(dir, "sock"), tt.backends)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(cfg, "\n    server "); n != len(tt.backends) {
				t.Fatalf("config has %d server lines, want %d:\n%s", n, len(tt.backends), cfg)
			}
			if strings.Contains(cfg, "addr  port") || strings.Contains(cfg, "addr :") {
				t.Fatalf("config has an empty check address:\n%s", cfg)
			}
			path := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput()
			if err != nil {
				t.Fatalf("haproxy -c rejects the config: %v\n%s\n%s", err, out, cfg)
			}
			if strings.Contains(string(out), "WARNING") {
				t.Fatalf("haproxy -c warns about the config:\n%s\n%s", out, cfg)
			}
		})
	}
}

func TestConfig_RejectsMalformedAddresses(t *testing.T) {
	tests := []struct {
		name    string
		backend Backend
	}{
		{"MQTT without port", Backend{MQTT: "127.0.0.1", HTTP: "127.0.0.1:8081"}},
		{"HTTP without port", Backend{MQTT: "127.0.0.1:1884", HTTP: "127.0.0.1"}},
		{"HTTP empty", Backend{MQTT: "127.0.0.1:1884"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Config("127.0.0.1:1883", "/tmp/sock", []Backend{tt.backend}); err == nil {
				t.Fatalf("Config(%+v) = nil error, want one", tt.backend)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	const header = "# pxname,svname,qcur,status,check_status,\n"
	tests := []struct {
		name    string
		out     string
		want    []Server
		wantErr error
	}{
		{
			name: "servers of the backend only",
			out: header +
				"mqtt,FRONTEND,,OPEN,,\n" +
				"replicas,r0,0,UP,L7OK,\n" +
				"replicas,r1,0,DOWN,L7STS,\n" +
				"replicas,BACKEND,0,UP,,\n" +
				"other,x,0,UP,L7OK,\n",
			want: []Server{{"r0", "UP", "L7OK"}, {"r1", "DOWN", "L7STS"}},
		},
		{
			name: "transitional states kept verbatim",
			out:  header + "replicas,r0,0,UP 1/2,L7STS,\n",
			want: []Server{{"r0", "UP 1/2", "L7STS"}},
		},
		{name: "no header", out: "Unknown command\n", wantErr: errNoHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(tt.out)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("parseStat error = %v, want %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseStat = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("parseStat[%d] = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestServer_Up(t *testing.T) {
	tests := []struct {
		status string
		want   bool
	}{
		{"UP", true}, {"UP 1/2", true}, {"DOWN", false}, {"DOWN 1/1", false}, {"MAINT", false}, {"no check", false},
	}
	for _, tt := range tests {
		if got := (Server{Status: tt.status}).Up(); got != tt.want {
			t.Errorf("Server{Status: %q}.Up() = %v, want %v", tt.status, got, tt.want)
		}
	}
}
