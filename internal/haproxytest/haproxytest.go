// Package haproxytest runs a throwaway HAProxy in front of test backends, the
// way production runs it in front of replicas: TCP mode, round robin, and an
// HTTP health check of each backend's GET /readyz, so that a replica that
// fails readiness (draining, Redis unreachable) stops receiving new clients.
//
// Checks run every 200ms and two failures take a server down, so a test sees
// a dead or draining replica leave the rotation within about half a second.
// The harness talks to HAProxy's admin socket to learn each server's state.
package haproxytest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/bridgemq/server/internal/redistest"
)

// startTimeout bounds how long HAProxy may take to accept connections and
// report a healthy backend.
const startTimeout = 20 * time.Second

// stopTimeout bounds how long HAProxy may take to exit after SIGTERM before it
// is killed.
const stopTimeout = 5 * time.Second

// Backend is one server behind the proxy.
type Backend struct {
	// MQTT is the host:port that client connections are forwarded to.
	MQTT string
	// HTTP is the host:port whose GET /readyz decides whether the backend
	// receives new connections (200 = yes).
	HTTP string
	// SendProxyV2 makes HAProxy start each forwarded connection with a
	// PROXY protocol v2 header naming the client (send-proxy-v2); health
	// checks, which go to HTTP, carry none.
	SendProxyV2 bool
}

// HAProxy is one haproxy process owned by a test.
type HAProxy struct {
	addr     string
	dir      string
	sock     string
	backends []Backend

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // the process's exit status, valid once exited is closed
}

// BackendName is the name of the backend section in the generated config.
const BackendName = "replicas"

// Start writes a configuration for backends, runs `haproxy -f cfg -db` on a
// free 127.0.0.1 port and waits until the frontend accepts connections and at
// least one backend has passed a health check; t.Cleanup stops it. Without a
// haproxy binary the test is skipped, or fails when the environment variable
// CI is "true".
func Start(t testing.TB, backends []Backend) *HAProxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("haproxytest: haproxy not found in PATH: %v", err)
		}
		t.Skipf("haproxytest: haproxy not found in PATH (install haproxy to run this test): %v", err)
	}
	if len(backends) == 0 {
		t.Fatal("haproxytest: Start needs at least one backend")
	}
	// Not t.TempDir(): a long test name can push the admin socket's path
	// past the 108 bytes a unix socket address holds.
	dir, err := os.MkdirTemp("", "haproxytest")
	if err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The free port is found by binding and releasing it, so another process
	// can take it before HAProxy binds; a start that fails is retried on a
	// fresh port.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		h, err := start(bin, dir, backends)
		if err == nil {
			t.Cleanup(h.Stop)
			return h
		}
		lastErr = err
	}
	t.Fatalf("haproxytest: %v", lastErr)
	return nil
}

func start(bin, dir string, backends []Backend) (*HAProxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	h := &HAProxy{
		addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:      dir,
		sock:     filepath.Join(dir, "admin.sock"),
		backends: append([]Backend(nil), backends...),
	}
	cfg, err := Config(h.addr, h.sock, backends)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	logPath := filepath.Join(dir, "haproxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, "-f", cfgPath, "-db")
	redistest.DieWithTest(cmd)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	h.cmd = cmd
	h.exited = make(chan struct{})
	go func() {
		h.err = cmd.Wait()
		close(h.exited)
	}()
	if err := h.waitReady(); err != nil {
		h.Stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; haproxy output:\n%s", err, out)
	}
	return h, nil
}

// waitReady waits until the frontend accepts a connection and at least one
// server is UP after a passed layer-7 check (HAProxy starts servers UP
// before any check has run, so UP alone proves nothing).
func (h *HAProxy) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-h.exited:
			return fmt.Errorf("haproxy exited before it was ready: %v", h.err)
		default:
		}
		lastErr = h.probe()
		if lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("haproxy not ready after %s: %w", startTimeout, lastErr)
}

func (h *HAProxy) probe() error {
	c, err := net.DialTimeout("tcp", h.addr, time.Second)
	if err != nil {
		return fmt.Errorf("frontend %s: %w", h.addr, err)
	}
	c.Close()
	servers, err := h.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.Up() && s.CheckStatus == "L7OK" {
			return nil
		}
	}
	return fmt.Errorf("no backend has passed a health check yet: %+v", servers)
}

// Addr returns the frontend's host:port, where clients connect.
func (h *HAProxy) Addr() string { return h.addr }

// Dir returns the directory holding haproxy.cfg, the admin socket and
// haproxy.log (HAProxy's own output).
func (h *HAProxy) Dir() string { return h.dir }

// ServerName returns the name the generated config gives backends[i].
func ServerName(i int) string { return "r" + strconv.Itoa(i) }

// Stop terminates HAProxy (SIGTERM, then SIGKILL after a few seconds) and
// waits for it to exit. A second Stop is harmless.
func (h *HAProxy) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(os.Interrupt)
	select {
	case <-h.exited:
	case <-time.After(stopTimeout):
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
	h.cmd = nil
}

// Server is one backend server as HAProxy sees it.
type Server struct {
	// Name is the server's name in the config, ServerName(i) for backends[i].
	Name string
	// Status is HAProxy's status column: "UP", "DOWN", "UP 1/2" (going
	// down), "DOWN 1/1" (going up), "MAINT", "no check".
	Status string
	// CheckStatus is the result of the last health check, "L7OK" when
	// /readyz answered 200, "L7STS" on another status, "L4CON" when the
	// port refused the connection, "INI" before the first check.
	CheckStatus string
}

// Up reports whether the server is checked and in the rotation: UP, or UP
// but going down (it still receives traffic until fall checks have failed).
func (s Server) Up() bool { return strings.HasPrefix(s.Status, "UP") }

// Servers returns the state of every backend server, in config order, read
// from the admin socket's `show stat`.
func (h *HAProxy) Servers() ([]Server, error) {
	out, err := h.Command("show stat")
	if err != nil {
		return nil, err
	}
	return parseStat(out)
}

// WaitServer waits until backends[i] is UP (up=true) or DOWN (up=false) and
// fails the test after the start timeout.
func (h *HAProxy) WaitServer(t testing.TB, i int, up bool) {
	t.Helper()
	name := ServerName(i)
	want := "DOWN"
	if up {
		want = "UP"
	}
	deadline := time.Now().Add(startTimeout)
	var last []Server
	for time.Now().Before(deadline) {
		servers, err := h.Servers()
		if err != nil {
			t.Fatalf("haproxytest: %v", err)
		}
		last = servers
		for _, s := range servers {
			// "UP 1/2" is going down and "DOWN 1/1" going up: wait for the
			// plain state, so traffic has really moved.
			if s.Name == name && s.Status == want {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("haproxytest: server %s not up=%v after %s: %+v", name, up, startTimeout, last)
}

// Command sends one command to HAProxy's admin socket and returns its answer.
func (h *HAProxy) Command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return "", fmt.Errorf("admin socket: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", fmt.Errorf("admin socket deadline: %w", err)
	}
	// Without "prompt" mode HAProxy answers one command and closes the
	// connection, so the answer is everything up to EOF.
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("admin socket %q: %w", cmd, err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("admin socket %q: %w", cmd, err)
	}
	return string(out), nil
}

// errNoHeader means `show stat` answered without its CSV header line.
var errNoHeader = errors.New("show stat: no header line")

// parseStat extracts the backend servers from `show stat` CSV output, whose
// first line names the columns: "# pxname,svname,...,status,...".
func parseStat(out string) ([]Server, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return nil, fmt.Errorf("%w: %q", errNoHeader, out)
	}
	col := map[string]int{}
	for i, name := range strings.Split(strings.TrimPrefix(lines[0], "# "), ",") {
		col[name] = i
	}
	for _, need := range []string{"pxname", "svname", "status", "check_status"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("show stat: no %q column in %q", need, lines[0])
		}
	}
	var servers []Server
	for _, line := range lines[1:] {
		f := strings.Split(line, ",")
		if len(f) <= col["check_status"] || len(f) <= col["status"] {
			continue
		}
		if f[col["pxname"]] != BackendName {
			continue
		}
		if sv := f[col["svname"]]; sv != "BACKEND" && sv != "FRONTEND" {
			servers = append(servers, Server{Name: sv, Status: f[col["status"]], CheckStatus: f[col["check_status"]]})
		}
	}
	return servers, nil
}

var configTemplate = template.Must(template.New("haproxy.cfg").Parse(`# Written by internal/haproxytest.
global
    stats socket {{.Socket}} mode 600 level admin
    nbthread 1
    maxconn 4096

defaults
    mode tcp
    # MQTT connections live as long as their clients: keep-alive pings, not
    # proxy timeouts, decide when one is dead.
    # A connection refused by a replica that died between two checks is
    # retried on another one.
    retries 2
    option redispatch
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 1s

frontend mqtt
    bind {{.Frontend}}
    default_backend {{.Backend}}

backend {{.Backend}}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
{{- range .Servers}}
    server {{.Name}} {{.MQTT}} check addr {{.CheckHost}} port {{.CheckPort}}{{if .SendProxyV2}} send-proxy-v2{{end}}
{{- end}}
`))

type configServer struct {
	Name, MQTT, CheckHost, CheckPort string
	SendProxyV2                      bool
}

// Config returns the HAProxy configuration Start writes: a TCP frontend on
// frontend (host:port), the admin socket at socket, and one checked server
// per backend.
func Config(frontend, socket string, backends []Backend) (string, error) {
	data := struct {
		Frontend, Socket, Backend string
		Servers                   []configServer
	}{Frontend: frontend, Socket: socket, Backend: BackendName}
	for i, b := range backends {
		if _, _, err := net.SplitHostPort(b.MQTT); err != nil {
			return "", fmt.Errorf("backend %d MQTT address %q: %w", i, b.MQTT, err)
		}
		host, port, err := net.SplitHostPort(b.HTTP)
		if err != nil {
			return "", fmt.Errorf("backend %d HTTP address %q: %w", i, b.HTTP, err)
		}
		if host == "" {
			host = "127.0.0.1"
		}
		data.Servers = append(data.Servers, configServer{Name: ServerName(i), MQTT: b.MQTT, CheckHost: host, CheckPort: port, SendProxyV2: b.SendProxyV2})
	}
	var b strings.Builder
	if err := configTemplate.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render haproxy config: %w", err)
	}
	return b.String(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
