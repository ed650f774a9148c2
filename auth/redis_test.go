package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// startRedisUsers starts a redis-server, a RedisUsers following it and an
// admin writing to it.
func startRedisUsers(t *testing.T, allowAnonymous bool) (*redistest.Server, *RedisUsers, *UserAdmin) {
	t.Helper()
	srv := redistest.Start(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u, err := NewRedisUsers(ctx, rdb, "test:", allowAnonymous, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	return srv, u, &UserAdmin{RDB: rdb, Prefix: "test:"}
}

func login(u *RedisUsers, user, password string) packets.ReasonCode {
	return u.Authenticate(true, user, true, []byte(password))
}

// eventually waits until cond holds, up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRedisUsers_AuthenticateAndACL(t *testing.T) {
	_, u, admin := startRedisUsers(t, false)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.AddUser(ctx, "alice", "secret", false))
	must(admin.AddUser(ctx, "root", "toor", true))
	must(admin.SetRule(ctx, "alice", "sensors/#", "subscribe"))
	must(admin.SetRule(ctx, "alice", "cmd/%u/+", "publish"))
	must(admin.SetRule(ctx, "alice", "dev/${clientid}/#", "all"))
	if err := admin.AddUser(ctx, "alice", "x", false); !errors.Is(err, ErrUserExists) {
		t.Errorf("second add: %v, want ErrUserExists", err)
	}
	if err := admin.SetRule(ctx, "alice", "a/#", "read"); !errors.Is(err, ErrSyntax) {
		t.Errorf("rule with action read: %v, want ErrSyntax", err)
	}

	codes := []struct {
		user, password string
		want           packets.ReasonCode
	}{
		{"alice", "secret", packets.Accepted},
		{"alice", "Secret", packets.RefusedBadUsernamePassword},
		{"alice", "secret\x00", packets.RefusedBadUsernamePassword},
		{"mallory", "secret", packets.RefusedBadUsernamePassword},
		{"root", "toor", packets.Accepted},
	}
	for _, c := range codes {
		if got := login(u, c.user, c.password); got != c.want {
			t.Errorf("Authenticate(%q, %q) = 0x%02x, want 0x%02x", c.user, c.password, got, c.want)
		}
	}
	if got := u.Authenticate(false, "", false, nil); got != packets.RefusedNotAuthorized {
		t.Errorf("anonymous with -allow-anonymous=false: 0x%02x, want 0x05", got)
	}
	if got := u.Authenticate(true, "alice", false, nil); got != packets.RefusedBadUsernamePassword {
		t.Errorf("no password: 0x%02x, want 0x04", got)
	}

	checks := []struct {
		name, op, client, user, topic string
		want                          bool
	}{
		{"subscribe grants subscribing", "sub", "c1", "alice", "sensors/+/temp", true},
		{"subscribe grants reading", "read", "c1", "alice", "sensors/a/temp", true},
		{"subscribe does not grant publishing", "write", "c1", "alice", "sensors/a/temp", false},
		{"publish with %u", "write", "c1", "alice", "cmd/alice/x", true},
		{"publish with %u, another user's tree", "write", "c1", "alice", "cmd/bob/x", false},
		{"publish does not grant subscribing", "sub", "c1", "alice", "cmd/alice/x", false},
		{"all with ${clientid}", "sub", "c1", "alice", "dev/c1/#", true},
		{"all with ${clientid} writes", "write", "c1", "alice", "dev/c1/state", true},
		{"all with ${clientid}, another client", "write", "c2", "alice", "dev/c1/state", false},
		{"client id with a wildcard", "write", "c+", "alice", "dev/c+/state", false},
		{"no rule", "write", "c1", "alice", "other", false},
		{"superuser", "sub", "c1", "root", "#", true},
		{"unknown user", "read", "c1", "mallory", "sensors/a/temp", false},
		{"anonymous", "read", "c1", "", "sensors/a/temp", false},
	}
	for _, c := range checks {
		var got bool
		switch c.op {
		case "sub":
			got = u.CanSubscribe(c.client, c.user, c.topic)
		case "read":
			got = u.CanRead(c.client, c.user, c.topic)
		default:
			got = u.CanWrite(c.client, c.user, c.topic)
		}
		if got != c.want {
			t.Errorf("%s: %s(%q, %q, %q) = %v, want %v", c.name, c.op, c.client, c.user, c.topic, got, c.want)
		}
	}
}

// A cached user is read again after a notice: changes through UserAdmin
// apply at once, and a change written behind its back applies on the
// next notice.
func TestRedisUsers_NoticeInvalidatesCache(t *testing.T) {
	srv, u, admin := startRedisUsers(t, true)
	ctx := context.Background()
	if err := admin.AddUser(ctx, "bob", "one", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new user accepted", func() bool { return login(u, "bob", "one") == packets.Accepted })

	if err := admin.SetPassword(ctx, "bob", "two"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new password accepted", func() bool { return login(u, "bob", "two") == packets.Accepted })
	if got := login(u, "bob", "one"); got != packets.RefusedBadUsernamePassword {
		t.Errorf("old password: 0x%02x, want 0x04", got)
	}

	if err := admin.SetRule(ctx, "bob", "a/#", "all"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rule applies", func() bool { return u.CanWrite("c", "bob", "a/b") })

	// Written without a notice: the cache keeps the old rules...
	rdb := admin.RDB
	if err := rdb.HDel(ctx, ACLKey("bob"), "a/#").Err(); err != nil {
		t.Fatal(err)
	}
	if !u.CanWrite("c", "bob", "a/b") {
		t.Fatal("the rule removed behind the cache's back applied without a notice; is anything cached?")
	}
	// ...until one comes.
	if err := rdb.Publish(ctx, UsersChannel("test:"), "*").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rule removed", func() bool { return !u.CanWrite("c", "bob", "a/b") })

	if err := admin.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted user refused", func() bool { return login(u, "bob", "two") == packets.RefusedBadUsernamePassword })
	if err := admin.DeleteUser(ctx, "bob"); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("second delete: %v, want ErrNoSuchUser", err)
	}
	_ = srv
}

// EMQX's "sha256" with salt_position prefix: hex(SHA-256(salt+password)),
// the salt in its own field; and mosquitto_passwd's $6$ too.
func TestRedisUsers_EMQXAndMosquittoHashes(t *testing.T) {
	_, u, admin := startRedisUsers(t, true)
	ctx := context.Background()
	sum := sha256.Sum256([]byte("slat_foo123" + "public"))
	if err := admin.RDB.HSet(ctx, UserKey("emqx_u"), "password_hash", hex.EncodeToString(sum[:]), "salt", "slat_foo123", "is_superuser", "true").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.RDB.HSet(ctx, UserKey("carol"), "password_hash", carolHash, "salt", "").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.RDB.HSet(ctx, UserKey("plain"), "password_hash", "public").Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, password string
		want           packets.ReasonCode
	}{
		{"emqx_u", "public", packets.Accepted},
		{"emqx_u", "slat_foo123public", packets.RefusedBadUsernamePassword},
		{"carol", "hunter2", packets.Accepted},
		{"plain", "public", packets.RefusedBadUsernamePassword}, // plain text is never accepted
	} {
		if got := login(u, c.user, c.password); got != c.want {
			t.Errorf("Authenticate(%q, %q) = 0x%02x, want 0x%02x", c.user, c.password, got, c.want)
		}
	}
	if !u.CanSubscribe("c", "emqx_u", "#") {
		t.Error("is_superuser true: subscribe to # refused")
	}
}

// With Redis gone, a CONNECT of a user not cached is answered 0x03 and
// operations are refused; nothing panics, and it recovers with Redis.
func TestRedisUsers_RedisDown_ServerUnavailable(t *testing.T) {
	srv, u, admin := startRedisUsers(t, true)
	if err := admin.AddUser(context.Background(), "dave", "pw", false); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if got := login(u, "dave", "pw"); got != packets.RefusedServerUnavailable {
		t.Fatalf("Redis down: 0x%02x, want 0x03", got)
	}
	if u.CanWrite("c", "dave", "x") {
		t.Error("Redis down: write allowed")
	}
	srv.Restart(t)
	// The restarted Redis has no data unless persisted; add dave again.
	eventually(t, "admin works again", func() bool {
		err := admin.AddUser(context.Background(), "dave", "pw", false)
		return err == nil || errors.Is(err, ErrUserExists)
	})
	eventually(t, "connect accepted again", func() bool { return login(u, "dave", "pw") == packets.Accepted })
}

func TestHashPassword_MosquittoPasswdFormat(t *testing.T) {
	h, err := HashPassword("p@ss w0rd:colon")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$7$101$") {
		t.Fatalf("hash %q does not start $7$101$", h)
	}
	p, err := ParsePasswords(strings.NewReader("u:" + h + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Check("u", []byte("p@ss w0rd:colon")) || p.Check("u", []byte("p@ss w0rd")) {
		t.Error("the hash does not verify as a password file line")
	}
	if _, err := HashPassword("a\x00b"); err == nil {
		t.Error("a password with NUL was hashed")
	}
}
