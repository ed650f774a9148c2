package auth

import (
	"path/filepath"
	"testing"

	"github.com/bridgemq/server/packets"
)

func TestAuthorizer_Authenticate(t *testing.T) {
	pw, err := LoadPasswordFile(filepath.Join("testdata", "passwd_mixed"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		a        *Authorizer
		userFlag bool
		user     string
		passFlag bool
		pass     string
		want     packets.ReasonCode
	}{
		{name: "anonymous allowed", a: &Authorizer{AllowAnonymous: true}, want: packets.Accepted},
		{name: "anonymous refused", a: &Authorizer{}, want: packets.RefusedNotAuthorized},
		{name: "anonymous refused with password file", a: &Authorizer{Passwords: pw}, want: packets.RefusedNotAuthorized},
		{name: "anonymous allowed with password file", a: &Authorizer{Passwords: pw, AllowAnonymous: true}, want: packets.Accepted},
		{name: "empty user name is anonymous", a: &Authorizer{Passwords: pw}, userFlag: true, user: "", want: packets.RefusedNotAuthorized},
		{name: "password without user name MQTT_3_1_2_22", a: &Authorizer{AllowAnonymous: true}, passFlag: true, pass: "x", want: packets.RefusedBadUsernamePassword},
		{name: "good pbkdf2 password", a: &Authorizer{Passwords: pw}, userFlag: true, user: "alice", passFlag: true, pass: "secret", want: packets.Accepted},
		{name: "good sha512 password", a: &Authorizer{Passwords: pw}, userFlag: true, user: "carol", passFlag: true, pass: "hunter2", want: packets.Accepted},
		{name: "wrong password", a: &Authorizer{Passwords: pw, AllowAnonymous: true}, userFlag: true, user: "alice", passFlag: true, pass: "nope", want: packets.RefusedBadUsernamePassword},
		{name: "missing password", a: &Authorizer{Passwords: pw, AllowAnonymous: true}, userFlag: true, user: "alice", want: packets.RefusedBadUsernamePassword},
		{name: "unknown user", a: &Authorizer{Passwords: pw, AllowAnonymous: true}, userFlag: true, user: "mallory", passFlag: true, pass: "secret", want: packets.RefusedBadUsernamePassword},
		{name: "user without password file", a: &Authorizer{}, userFlag: true, user: "anyone", want: packets.Accepted},
		{name: "user and password without password file", a: &Authorizer{}, userFlag: true, user: "anyone", passFlag: true, pass: "x", want: packets.Accepted},
		{name: "nil authorizer", a: nil, want: packets.Accepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.a.Authenticate(tt.userFlag, tt.user, tt.passFlag, []byte(tt.pass))
			if got != tt.want {
				t.Errorf("Authenticate = 0x%02x, want 0x%02x", got, tt.want)
			}
		})
	}
}

func TestAuthorizer_NoACLAllowsEverything(t *testing.T) {
	for _, a := range []*Authorizer{nil, {}, {AllowAnonymous: true}} {
		if a.ChecksReads() {
			t.Error("ChecksReads true without an ACL")
		}
		if !a.CanSubscribe("c", "", "#") || !a.CanRead("c", "", "$SYS/x") || !a.CanWrite("c", "u", "a/b") {
			t.Error("an Authorizer without an ACL refused an operation")
		}
	}
}

func TestAuthorizer_DelegatesToACL(t *testing.T) {
	a := &Authorizer{ACL: mustLoadACL(t, "acl_example"), AllowAnonymous: true}
	if !a.ChecksReads() {
		t.Error("ChecksReads false with an ACL")
	}
	if a.CanSubscribe("c", "", "test/nosubscribe") || a.CanRead("c", "", "test/nosubscribe") || a.CanWrite("c", "", "test/nosubscribe") {
		t.Error("denied topic allowed")
	}
	if !a.CanSubscribe("c", "", "#") || !a.CanRead("c", "", "test/x") || !a.CanWrite("c", "", "test/x") {
		t.Error("granted topic refused")
	}
}
