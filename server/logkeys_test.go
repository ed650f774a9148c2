package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/logbuf"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// Every line a connection's session writes, from "client connected" to
// "client disconnected", carries the same keys: client, user, remote,
// listener and node, with the connection's values.
func TestServer_ConnectionLogLinesCarryClientKeys(t *testing.T) {
	var out logbuf.Buffer
	srv := mqtttest.StartServer(t, slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})),
		"-http", "127.0.0.1:0", "-max-topic-levels", "3")
	c := mqtttest.Dial(t, srv.Addr())
	c.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30, ClientID: "keys-client", UsernameFlag: true, Username: "keys-user"})
	local := c.Conn.LocalAddr().String()
	// A refused QoS 0 PUBLISH (over -max-topic-levels) logs at info and keeps
	// the connection; DISCONNECT then logs its end.
	c.Send(&packets.Publish{Topic: "a/b/c/d/e", Payload: []byte("x")})
	c.Send(&packets.Disconnect{})
	want := map[string]string{"client": "keys-client", "user": "keys-user", "remote": local, "listener": "tcp", "node": "test"}
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for !(seen["client connected"] && seen["publish refused"] && seen["client disconnected"]) {
		if time.Now().After(deadline) {
			t.Fatalf("lines seen %v; log:\n%s", seen, out.Lines())
		}
		time.Sleep(10 * time.Millisecond)
		seen = map[string]bool{}
		for _, l := range out.Lines(`"remote":"` + local + `"`) {
			var rec map[string]any
			if err := json.NewDecoder(bytes.NewReader([]byte(l))).Decode(&rec); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			msg, _ := rec["msg"].(string)
			seen[msg] = true
			for k, v := range want {
				if got, _ := rec[k].(string); got != v {
					t.Errorf("line %q: %s=%q, want %q", msg, k, got, v)
				}
			}
		}
		if t.Failed() {
			return
		}
	}
	// The server's own lines name the replica too.
	for _, l := range out.Lines(`"msg":"listening"`) {
		if !strings.Contains(l, `"node":"test"`) {
			t.Errorf("listening line without the node: %s", l)
		}
	}
}
