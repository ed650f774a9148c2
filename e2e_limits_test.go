package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// -client-id-pattern refuses a client id that does not match it with
// CONNACK 0x02 [MQTT-3.1.3-9]: a fleet can keep ids out of ACL patterns'
// way, e.g. "/" reaching into another device's tree through %c.
func TestConnect_ClientIDPattern_Connack0x02_MQTT_3_1_3_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tc := range []struct {
			id   string
			want byte
		}{
			{"dev-17", packets.Accepted},
			{"dev-17/../dev-18", packets.RefusedIdentifierRejected},
			{"xdev-17", packets.RefusedIdentifierRejected},
			{"", packets.Accepted}, // the server's own generated id
		} {
			c := dialRaw(t, d.pub().Addr())
			ack := c.connect(&packets.Connect{ClientID: tc.id, CleanSession: true, KeepAlive: 30})
			if ack.ReturnCode != tc.want {
				t.Fatalf("client id %q: CONNACK 0x%02x, want 0x%02x", tc.id, ack.ReturnCode, tc.want)
			}
			if tc.want != packets.Accepted {
				c.expectClosed(waitTimeout)
			}
		}
	}, "-client-id-pattern", `dev-[0-9]+`)
}

// A password in -redis-url for a Redis that asks for none is accepted by
// Redis; the replica says so in its log rather than stay silent.
func TestRedis_PasswordNotRequiredIsLogged(t *testing.T) {
	rs := redistest.Start(t)
	url := strings.Replace(rs.URL(), "redis://", "redis://:not-needed@", 1)
	cfg := testConfig(t, "-redis-url", url, "-node-id", "pw")
	client, err := cfg.RedisClient()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	b, err := newRedisBridge(context.Background(), cfg, client, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("redis bridge with an unneeded password: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if !strings.Contains(logs.String(), "accepts clients without one") {
		t.Fatalf("no warning about the unneeded password; log:\n%s", logs.String())
	}
}
