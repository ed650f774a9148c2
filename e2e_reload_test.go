package main

// End-to-end tests of reloading the password and ACL files (Server.Reload,
// which main calls on SIGHUP): connections stay up, and a connected
// client's next packet is judged by the new rules.

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// writeFile writes content to path, replacing what was there.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// passwordLine is a mosquitto_passwd $7$ line for user:password.
func passwordLine(t testing.TB, user, password string) string {
	t.Helper()
	salt := []byte("reload-salt!")
	hash, err := pbkdf2.Key(sha512.New, password, salt, 101, sha512.Size)
	if err != nil {
		t.Fatalf("pbkdf2: %v", err)
	}
	return fmt.Sprintf("%s:$7$101$%s$%s\n", user, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(hash))
}

// The rules before and after the reload: anonymous clients lose writing
// out/#, lose reading watch/secret and gain other/#; admin may do anything.
const (
	reloadACLBefore = "topic readwrite watch/#\ntopic write out/#\n\nuser admin\ntopic readwrite #\n"
	reloadACLAfter  = "topic deny watch/secret\ntopic read watch/#\ntopic readwrite other/#\n\nuser admin\ntopic readwrite #\n"
)

// reloadClients connects the client whose rules change (anonymous,
// subscribed to watch/#) and an admin subscribed to out/#, which sees what
// the first one manages to publish.
func reloadClients(t *testing.T, addr string) (sub, admin *mqtttest.Client) {
	t.Helper()
	sub = mqtttest.Dial(t, addr)
	sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
	if codes := sub.Subscribe(1, packets.Subscription{Filter: "watch/#", QoS: 1}); codes[0] != packets.GrantedQoS1 {
		t.Fatalf("SUBACK %v, want [1]", codes)
	}
	admin = mqtttest.Dial(t, addr)
	admin.MustConnect(&packets.Connect{ClientID: unique(t, "admin"), CleanSession: true, KeepAlive: 60,
		UsernameFlag: true, Username: "admin", PasswordFlag: true, Password: []byte("pw")})
	if codes := admin.Subscribe(1, packets.Subscription{Filter: "out/#", QoS: 1}); codes[0] != packets.GrantedQoS1 {
		t.Fatalf("admin SUBACK %v, want [1]", codes)
	}
	return sub, admin
}

// checkRules checks, packet by packet on connections opened before the
// change, what reloadACLBefore (after=false) or reloadACLAfter allows:
// sub's PUBLISH to out/x, a message on watch/secret reaching sub, and sub's
// SUBSCRIBE to other/#.
func checkRules(t *testing.T, sub, admin *mqtttest.Client, after bool, round string) {
	t.Helper()
	sub.PublishQoS1(10, "out/x", "sub-"+round)
	admin.Send(&packets.Publish{Topic: "out/x", Payload: []byte("fence-out-" + round)})
	got := admin.PublishesUntil("fence-out-" + round)
	if wrote := len(got) == 1; wrote == after {
		t.Errorf("%s: sub's publish to out/x delivered %d times; the ACL %s allow it", round, len(got), map[bool]string{true: "does not", false: "does"}[after])
	}

	admin.Send(&packets.Publish{Topic: "watch/secret", Payload: []byte("secret-" + round)})
	admin.Send(&packets.Publish{Topic: "watch/ok", Payload: []byte("fence-watch-" + round)})
	got = sub.PublishesUntil("fence-watch-" + round)
	if read := len(got) == 1; read == after {
		t.Errorf("%s: sub received %d messages on watch/secret; the ACL %s allow reading it", round, len(got), map[bool]string{true: "does not", false: "does"}[after])
	}

	want := packets.SubackFailure
	if after {
		want = packets.GrantedQoS1
	}
	if codes := sub.Subscribe(11, packets.Subscription{Filter: "other/#", QoS: 1}); codes[0] != want {
		t.Errorf("%s: SUBACK for other/# %v, want [%d]", round, codes, want)
	}
	if !sub.Alive(waitTimeout) {
		t.Fatalf("%s: the connection did not stay open", round)
	}
}

// A reload puts the new ACL in force for clients already connected: the
// next PUBLISH, delivery and SUBSCRIBE of a client whose rules changed are
// judged by them, on the same connection.
func TestReload_ACLFile_NextPacketJudgedByNewRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl")
	writeFile(t, path, reloadACLBefore)
	srv := startServer(t, "-acl-file", path)
	sub, admin := reloadClients(t, srv.Addr())
	checkRules(t, sub, admin, false, "before")

	writeFile(t, path, reloadACLAfter)
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	checkRules(t, sub, admin, true, "after")
}

// A file that no longer parses is refused: the reload says why (file and
// line) and the rules in force stay, for the password file as for the ACL.
func TestReload_BadFile_KeepsRulesInForce(t *testing.T) {
	dir := t.TempDir()
	aclPath, pwPath := filepath.Join(dir, "acl"), filepath.Join(dir, "passwd")
	writeFile(t, aclPath, reloadACLAfter)
	writeFile(t, pwPath, passwordLine(t, "admin", "pw"))
	srv := startServer(t, "-acl-file", aclPath, "-password-file", pwPath)
	sub, admin := reloadClients(t, srv.Addr())

	writeFile(t, aclPath, reloadACLBefore+"topic sideways x\n")
	err := srv.Reload()
	if err == nil || !strings.Contains(err.Error(), aclPath+":6:") {
		t.Fatalf("Reload error = %v, want one naming %s:6", err, aclPath)
	}
	checkRules(t, sub, admin, true, "bad acl")

	writeFile(t, aclPath, reloadACLBefore)
	writeFile(t, pwPath, "admin:plaintext\n")
	if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), pwPath+":1:") {
		t.Fatalf("Reload error = %v, want one naming %s:1", err, pwPath)
	}
	// Both files are swapped together or not at all: the good new ACL
	// waits for a good password file.
	checkRules(t, sub, admin, true, "bad passwd")
}

// A user added to the password file can connect once it is reloaded, and
// one removed can no longer, while clients connected as that user stay.
func TestReload_PasswordFile_UsersAddedAndRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, path, passwordLine(t, "old", "pw-old"))
	srv := startServer(t, "-password-file", path, "-allow-anonymous=false")
	connect := func(user, password string) (*mqtttest.Client, packets.ReasonCode) {
		c := mqtttest.Dial(t, srv.Addr())
		ack := c.Connect(&packets.Connect{ClientID: unique(t, user), CleanSession: true, KeepAlive: 60,
			UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(password)})
		return c, ack.ReturnCode
	}
	oldConn, code := connect("old", "pw-old")
	if code != packets.Accepted {
		t.Fatalf("old user: CONNACK 0x%02x", code)
	}
	if _, code := connect("new", "pw-new"); code != packets.RefusedBadUsernamePassword {
		t.Fatalf("new user before reload: CONNACK 0x%02x, want 0x04", code)
	}

	writeFile(t, path, passwordLine(t, "new", "pw-new"))
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, code := connect("new", "pw-new"); code != packets.Accepted {
		t.Fatalf("new user after reload: CONNACK 0x%02x, want 0x00", code)
	}
	if _, code := connect("old", "pw-old"); code != packets.RefusedBadUsernamePassword {
		t.Fatalf("removed user after reload: CONNACK 0x%02x, want 0x04", code)
	}
	if !oldConn.Alive(waitTimeout) {
		t.Fatal("the removed user's open connection was dropped by the reload")
	}
}

// SIGHUP to the server process reloads the ACL file: a client connected
// before it is judged by the new rules on its next SUBSCRIBE, on the same
// connection.
func TestSIGHUP_ReloadsACLFile_ConnectionStays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl")
	writeFile(t, path, reloadACLBefore)
	p := mqtttest.StartProcess(t, "", "hup", "-acl-file", path)
	sub, admin := reloadClients(t, p.Addr())
	checkRules(t, sub, admin, false, "before")

	writeFile(t, path, reloadACLAfter)
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The signal is handled asynchronously: wait for its log line.
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(p.LogTail(50), "password and ACL files reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged within %s:\n%s", waitTimeout, p.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkRules(t, sub, admin, true, "after")
}
