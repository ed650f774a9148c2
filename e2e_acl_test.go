package main

// End-to-end tests of access control: Mosquitto password files (CONNACK 0x04
// and 0x05) and ACL files (SUBACK 0x80, reads filtered, writes acknowledged
// and dropped).

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// writeGeneratedPasswordFile writes a password file with one $7$ line
// (PBKDF2-SHA512, as mosquitto_passwd writes it) for user:password.
func writeGeneratedPasswordFile(t testing.TB, user, password string) string {
	t.Helper()
	salt := []byte("e2e-salt-12b")
	hash, err := pbkdf2.Key(sha512.New, password, salt, 101, sha512.Size)
	if err != nil {
		t.Fatalf("pbkdf2: %v", err)
	}
	line := fmt.Sprintf("%s:$7$101$%s$%s\n", user,
		base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(hash))
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatalf("write password file: %v", err)
	}
	return path
}

// [MQTT-3.2.2.3] table 3.1: a wrong password gets CONNACK 0x04, and with
// -allow-anonymous=false a client without user name gets 0x05; the
// connection is then closed [MQTT-3.2.2-5].
func TestAuth_PasswordFile_Connack0x04And0x05_MQTT_3_2_2_5(t *testing.T) {
	files := []struct {
		name, path, user, password string
	}{
		{"mosquitto_passwd file", "auth/testdata/passwd_pbkdf2", "alice", "secret"},
		{"generated $7$ line", "", "erin", "pa55:word"},
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			path := f.path
			if path == "" {
				path = writeGeneratedPasswordFile(t, f.user, f.password)
			}
			tests := []struct {
				name     string
				connect  packets.Connect
				wantCode packets.ReasonCode
			}{
				{"right password", packets.Connect{UsernameFlag: true, Username: f.user, PasswordFlag: true, Password: []byte(f.password)}, packets.Accepted},
				{"wrong password", packets.Connect{UsernameFlag: true, Username: f.user, PasswordFlag: true, Password: []byte(f.password + "x")}, packets.RefusedBadUsernamePassword},
				{"no password", packets.Connect{UsernameFlag: true, Username: f.user}, packets.RefusedBadUsernamePassword},
				{"unknown user", packets.Connect{UsernameFlag: true, Username: "mallory", PasswordFlag: true, Password: []byte(f.password)}, packets.RefusedBadUsernamePassword},
				{"anonymous", packets.Connect{}, packets.RefusedNotAuthorized},
			}
			forEachDeployment(t, func(t *testing.T, d *deployment) {
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						c := mqtttest.Dial(t, d.pub().Addr())
						p := tt.connect
						p.ClientID, p.CleanSession, p.KeepAlive = unique(t, "c"), true, 30
						ack := c.Connect(&p)
						if ack.ReturnCode != tt.wantCode {
							t.Fatalf("CONNACK 0x%02x, want 0x%02x", ack.ReturnCode, tt.wantCode)
						}
						if tt.wantCode != packets.Accepted {
							if ack.SessionPresent {
								t.Error("session present set on a refusal [MQTT-3.2.2-4]")
							}
							c.ExpectClosed(waitTimeout)
						}
					})
				}
			}, "-password-file", path, "-allow-anonymous=false")
		})
	}
}

// Without -allow-anonymous=false, a password file still admits clients with
// no user name.
func TestAuth_PasswordFileAllowsAnonymousByDefault(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
		bad := mqtttest.Dial(t, d.pub().Addr())
		if ack := bad.Connect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30,
			UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("wrong")}); ack.ReturnCode != packets.RefusedBadUsernamePassword {
			t.Fatalf("CONNACK 0x%02x, want 0x04", ack.ReturnCode)
		}
	}, "-password-file", "auth/testdata/passwd_pbkdf2")
}

// [MQTT-3.9.3-2] an ACL-denied filter gets 0x80 in its SUBACK while the
// others in the same SUBSCRIBE are granted, and a '#' subscriber gets no
// message on the denied topic.
func TestACL_DenySubscribe_Suback0x80_MQTT_3_9_3_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
		allowed := unique(t, "t")
		codes := c.Subscribe(1,
			packets.Subscription{Filter: allowed, QoS: 1},
			packets.Subscription{Filter: "test/nosubscribe", QoS: 2},
			packets.Subscription{Filter: "#", QoS: 0})
		if fmt.Sprint(codes) != fmt.Sprint([]packets.ReasonCode{packets.GrantedQoS1, packets.SubackFailure, packets.GrantedQoS0}) {
			t.Fatalf("SUBACK %v, want [1 128 0]", codes)
		}

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, "test/nosubscribe", 1, false, "denied")
		publish(t, pub, allowed, 1, false, "fence")
		for {
			m := mqtttest.Expect[*packets.Publish](c)
			if m.QoS == 1 {
				c.Send(&packets.Puback{PacketID: m.PacketID})
			}
			if m.Topic == "test/nosubscribe" {
				t.Fatalf("'#' subscriber got %q on a topic it may not read", m.Payload)
			}
			if m.Topic == allowed && string(m.Payload) == "fence" {
				break
			}
		}
	}, "-acl-file", "testdata/e2e_interop.acl")
}

// A PUBLISH the client may not write is acknowledged as its QoS requires
// [MQTT-4.3.2-2] [MQTT-4.3.3-2], then dropped: not delivered and, with
// RETAIN=1, not stored.
func TestACL_DenyPublish_AckedAndDropped_MQTT_4_3_2_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true).SetOrderMatters(true))
		subscribe(t, sub, "ro/"+base+"/#", 2, col)
		subscribe(t, sub, "rw/"+base+"/#", 2, col)

		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		denied := "ro/" + base + "/x"
		c.Send(&packets.Publish{Topic: denied, Payload: []byte("q0")})
		c.PublishQoS1(1, denied, "q1")
		c.Send(&packets.Publish{QoS: 2, PacketID: 2, Topic: denied, Payload: []byte("q2"), Retain: true})
		if rec := mqtttest.Expect[*packets.Pubrec](c); rec.PacketID != 2 {
			t.Fatalf("PUBREC id %d", rec.PacketID)
		}
		c.Send(&packets.Pubrel{PacketID: 2})
		mqtttest.Expect[*packets.Pubcomp](c)
		// The connection stays usable.
		fence := "rw/" + base + "/fence"
		c.PublishQoS1(3, fence, "fence")

		if got := col.until(t, fence); len(got) != 0 {
			t.Fatalf("denied publish delivered: %q", got[0].Payload())
		}
		col.quiet(t)

		late := newCollector()
		sub2, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "late"), true))
		subscribe(t, sub2, "ro/"+base+"/#", 1, late)
		late.quiet(t) // the retained publish was dropped, not stored
	}, "-acl-file", "testdata/e2e_readonly.acl")
}

// Issue 1: the read ACL holds on every delivery path, not only live
// delivery. A persistent subscriber to public/# that may not read
// public/secret goes offline; the QoS 1 messages published meanwhile come
// back through the offline queue (single node) or the stream replay
// (replicas), and the denied ones must not be among them, as in Mosquitto.
func TestACL_ReadDenyAppliesToQueuedMessages_Issue1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		if codes := c.Subscribe(1, packets.Subscription{Filter: "public/#", QoS: 1}); codes[0] != 1 {
			t.Fatalf("SUBACK %v, want [1]", codes)
		}
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true).SetUsername("publisher"))
		fence := unique(t, "fence")
		publish(t, pub, "public/secret", 1, false, "secret-1")
		publish(t, pub, "public/ok", 1, false, "ok-1")
		publish(t, pub, "public/secret", 2, false, "secret-2")
		publish(t, pub, "public/ok", 1, false, fence)

		c = mqtttest.Dial(t, d.sub().Addr())
		if ack := c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
			t.Fatal("session present = 0 [MQTT-3.2.2-2]")
		}
		got := c.PublishesUntil(fence)
		for _, m := range got {
			if m.Topic == "public/secret" {
				t.Fatalf("queued message %q on public/secret delivered; the ACL denies reading it", m.Payload)
			}
		}
		if len(got) != 1 || string(got[0].Payload) != "ok-1" {
			t.Fatalf("queued messages %v, want only ok-1 before the fence", describePublishes(got))
		}
		// Live delivery after the reconnect is filtered too.
		publish(t, pub, "public/secret", 1, false, "secret-live")
		publish(t, pub, "public/ok", 1, false, fence+"-2")
		if got := c.PublishesUntil(fence + "-2"); len(got) != 0 {
			t.Fatalf("live messages %v delivered before the fence, want none", describePublishes(got))
		}
	}, "-acl-file", "testdata/e2e_read_deny.acl")
}
