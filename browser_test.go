package main

// MQTT over WebSocket from a real browser: headless Chromium, driven by
// chromedp, runs MQTT.js's browser bundle (taken from the npm package) on a
// page the test serves. The page connects to one replica directly and to
// another through HAProxy, subscribes on both, and a Go client on a third
// replica publishes. The test reads what the page received.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/mqtttest"
)

// browserTimeout bounds the whole browser part of the test: starting
// Chromium, loading the page, connecting, subscribing and receiving.
const browserTimeout = 60 * time.Second

// mqttJSVersion is the MQTT.js major version whose browser bundle the page
// loads (dist/mqtt.min.js of the npm package).
const mqttJSVersion = "mqtt@5"

// needTool returns the path of the first of names found in PATH; without
// one the test is skipped, or fails when CI is "true".
func needTool(t *testing.T, why string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v not found in PATH; %s", names, why)
	}
	t.Skipf("%v not found in PATH; %s", names, why)
	return ""
}

// mqttJSBundle fetches the MQTT.js npm package with `npm pack` into a
// temporary directory and returns its browser bundle.
func mqttJSBundle(t *testing.T, npm string) []byte {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pack := exec.CommandContext(ctx, npm, "pack", "--silent", mqttJSVersion)
	pack.Dir = dir
	pack.Env = append(os.Environ(), "npm_config_cache="+filepath.Join(dir, "npm-cache"), "npm_config_update_notifier=false")
	out, err := pack.CombinedOutput()
	if err != nil {
		t.Fatalf("npm pack %s: %v\n%s", mqttJSVersion, err, out)
	}
	tgz, err := filepath.Glob(filepath.Join(dir, "mqtt-*.tgz"))
	if err != nil || len(tgz) != 1 {
		t.Fatalf("npm pack %s left %v (%v), want one mqtt-*.tgz; output:\n%s", mqttJSVersion, tgz, err, out)
	}
	untar := exec.CommandContext(ctx, "tar", "-xzf", tgz[0], "-C", dir, "package/dist/mqtt.min.js")
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", tgz[0], err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "package", "dist", "mqtt.min.js"))
	if err != nil {
		t.Fatalf("MQTT.js bundle: %v", err)
	}
	return b
}

// browserPage connects one MQTT.js client per entry of ?brokers= (a JSON
// object of name → ws:// URL; the names listed in ?v5= speak MQTT 5.0, the
// others 3.1.1), subscribes each to ?topic= at QoS 1, and
// records in window.mqttState what happened: per client its state
// ("connecting", "subscribed", "closed"), granted QoS, the messages it
// received and any error.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>MQTT.js over WebSocket</title>
<script src="/mqtt.min.js"></script></head>
<body><script>
const params = new URLSearchParams(location.search);
const brokers = JSON.parse(params.get("brokers"));
const topic = params.get("topic");
const v5 = (params.get("v5") || "").split(",");
window.mqttState = {};
for (const [name, url] of Object.entries(brokers)) {
  const st = {state: "connecting", granted: [], messages: [], errors: []};
  window.mqttState[name] = st;
  const client = mqtt.connect(url, {
    protocolVersion: v5.includes(name) ? 5 : 4, clean: true, reconnectPeriod: 0, connectTimeout: 10000,
    clientId: "browser-" + name + "-" + Math.random().toString(16).slice(2, 10),
  });
  client.on("connect", () => {
    st.state = "connected";
    client.subscribe(topic, {qos: 1}, (err, granted) => {
      if (err) { st.errors.push("subscribe: " + err.message); return; }
      st.granted = granted.map(g => g.qos);
      st.state = "subscribed";
    });
  });
  client.on("message", (t, payload, packet) => {
    st.messages.push({topic: t, payload: new TextDecoder().decode(payload), qos: packet.qos});
  });
  client.on("error", e => st.errors.push(String(e && e.message || e)));
  client.on("close", () => { if (st.state !== "subscribed") st.state = "closed"; });
}
</script></body></html>`

// pageClient is one MQTT.js client's record in window.mqttState.
type pageClient struct {
	State    string   `json:"state"`
	Granted  []int    `json:"granted"`
	Errors   []string `json:"errors"`
	Messages []struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
		QoS     int    `json:"qos"`
	} `json:"messages"`
}

// readPage returns window.mqttState as the page holds it now.
func readPage(ctx context.Context) (map[string]pageClient, error) {
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.mqttState || {})`))
	if err != nil {
		return nil, fmt.Errorf("read window.mqttState: %w", err)
	}
	var st map[string]pageClient
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("window.mqttState %q: %w", raw, err)
	}
	return st, nil
}

// waitPage polls the page until done holds for its state, and fails the
// test with the last state seen when ctx ends first.
func waitPage(t *testing.T, ctx context.Context, what string, done func(map[string]pageClient) bool) map[string]pageClient {
	t.Helper()
	var last map[string]pageClient
	var lastErr error
	for {
		st, err := readPage(ctx)
		if err == nil {
			last = st
			if done(st) {
				return st
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("page: %s: not within %s; last state %+v (read error %v)", what, browserTimeout, last, lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startChromium starts headless Chromium on a fresh profile; the returned
// context drives its one tab, and cleanup ends the browser process.
func startChromium(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // tests run as root in CI, where the sandbox refuses to start
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), browserTimeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		// Cancelling the browser context closes Chromium and waits for
		// the process to exit.
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	return bctx
}

// MQTT.js in headless Chromium connects over ws:// to one replica (once
// with MQTT 3.1.1, once with 5.0) and through HAProxy to another,
// subscribes on each, and receives on each, once, the message a Go client
// publishes on a third replica.
func TestBrowser_MQTTjsOverWebSocketAcrossReplicas(t *testing.T) {
	chromium := needTool(t, "install Debian's chromium package to run the browser test", "chromium", "chromium-browser")
	npm := needTool(t, "install npm to fetch MQTT.js for the browser test", "npm")
	bundle := mqttJSBundle(t, npm)

	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{InProcess: true, Replicas: 3,
		Args: []string{"-ws-listen", "127.0.0.1:0", "-http", "127.0.0.1:0"}})
	direct, proxied, publisher := c.Servers[0], c.Servers[1], c.Servers[2]
	// HAProxy in TCP mode in front of the second replica's WebSocket
	// listener, checked on its /readyz, as the README configures it.
	proxy := haproxytest.Start(t, []haproxytest.Backend{{MQTT: proxied.WSAddr(), HTTP: proxied.HTTPAddr()}})
	proxy.WaitServer(t, 0, true)

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(browserPage))
		case "/mqtt.min.js":
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = w.Write(bundle)
		default:
			http.NotFound(w, r)
		}
	}))
	defer page.Close()

	topic := unique(t, "browser")
	brokers, _ := json.Marshal(map[string]string{
		"direct":  direct.WSURL(),
		"direct5": direct.WSURL(),
		"proxied": "ws://" + proxy.Addr() + "/mqtt",
	})
	pageURL := page.URL + "/?" + url.Values{"brokers": {string(brokers)}, "topic": {topic}, "v5": {"direct5"}}.Encode()
	names := []string{"direct", "direct5", "proxied"}

	ctx := startChromium(t, chromium)
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("load %s: %v", pageURL, err)
	}
	st := waitPage(t, ctx, "every client subscribed", func(st map[string]pageClient) bool {
		for _, n := range names {
			if st[n].State != "subscribed" {
				return false
			}
		}
		return true
	})
	for name, pc := range st {
		if len(pc.Granted) != 1 || pc.Granted[0] != 1 || len(pc.Errors) != 0 {
			t.Fatalf("%s: granted %v, errors %v; want QoS 1 and no error", name, pc.Granted, pc.Errors)
		}
	}
	// The page's clients are on their own replicas (two on the first, one
	// on the second); nobody is on the publisher's yet.
	for s, want := range map[*mqtttest.Server]int64{direct: 2, proxied: 1} {
		if n := s.Stats()["connections"]; n != want {
			t.Fatalf("replica %s has %d connections, want the page's %d", s.NodeID(), n, want)
		}
	}

	pub, _ := connectPaho(t, pahoOpts(publisher, unique(t, "gopub"), true))
	const payload = "hello from Go on the third replica"
	publish(t, pub, topic, 1, false, payload)
	// A fence after it: a duplicate of the message would arrive before it.
	publish(t, pub, topic, 1, false, "fence")
	st = waitPage(t, ctx, "every client received the message and the fence", func(st map[string]pageClient) bool {
		for _, n := range names {
			if m := st[n].Messages; len(m) == 0 || m[len(m)-1].Payload != "fence" {
				return false
			}
		}
		return true
	})
	for _, name := range names {
		pc := st[name]
		if len(pc.Messages) != 2 {
			t.Fatalf("%s received %d messages before and with the fence, want the message once: %+v", name, len(pc.Messages), pc.Messages)
		}
		m := pc.Messages[0]
		if m.Topic != topic || m.Payload != payload || m.QoS != 1 {
			t.Errorf("%s received %q %q QoS %d, want %q %q QoS 1", name, m.Topic, m.Payload, m.QoS, topic, payload)
		}
		if len(pc.Errors) != 0 {
			t.Errorf("%s errors: %v", name, pc.Errors)
		}
	}
}
