package auth

import (
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files under testdata/ were written by mosquitto_passwd 2.0.11 (Debian
// bookworm): passwd_pbkdf2 with the default -H sha512-pbkdf2 ($7$),
// passwd_sha512 with -H sha512 ($6$, the Mosquitto 1.x format), passwd_mixed
// with both.
func TestLoadPasswordFile_MosquittoPasswdVectors(t *testing.T) {
	tests := []struct {
		file, user, password string
		want                 bool
	}{
		{"passwd_pbkdf2", "alice", "secret", true},
		{"passwd_pbkdf2", "alice", "Secret", false},
		{"passwd_pbkdf2", "alice", "secret ", false},
		{"passwd_pbkdf2", "alice", "", false},
		{"passwd_pbkdf2", "alice", "secret\x00", false}, // HMAC would pad "secret" to this
		{"passwd_sha512", "carol", "hunter2\x00", false},
		{"passwd_pbkdf2", "alice", "secret\x00x", false},
		{"passwd_pbkdf2", "bob", "p@ss w0rd:colon", true},
		{"passwd_pbkdf2", "bob", "p@ss w0rd", false},
		{"passwd_pbkdf2", "jürgen", "grüße", true},
		{"passwd_pbkdf2", "jurgen", "grüße", false},
		{"passwd_pbkdf2", "carol", "hunter2", false},
		{"passwd_sha512", "carol", "hunter2", true},
		{"passwd_sha512", "carol", "hunter3", false},
		{"passwd_sha512", "dave", "p@ss w0rd:colon", true},
		{"passwd_sha512", "alice", "secret", false},
		{"passwd_mixed", "alice", "secret", true},
		{"passwd_mixed", "carol", "hunter2", true},
		{"passwd_mixed", "carol", "secret", false},
	}
	loaded := map[string]*Passwords{}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.user+"/"+tt.password, func(t *testing.T) {
			p := loaded[tt.file]
			if p == nil {
				var err error
				p, err = LoadPasswordFile(filepath.Join("testdata", tt.file))
				if err != nil {
					t.Fatal(err)
				}
				loaded[tt.file] = p
			}
			if got := p.Check(tt.user, []byte(tt.password)); got != tt.want {
				t.Errorf("Check(%q, %q) = %v, want %v", tt.user, tt.password, got, tt.want)
			}
		})
	}
}

// The $6$ format is one SHA-512 over the password bytes followed by the salt
// bytes (Mosquitto's pw__hash, pw_sha512 branch), not sha512-crypt. The
// mosquitto_passwd vector above proves it against the real tool; this one
// builds an entry from that definition with a fixed salt.
func TestCheck_SHA512IsPasswordThenSalt(t *testing.T) {
	salt := []byte("0123456789ab")
	sum := sha512.Sum512(append([]byte("pw"), salt...))
	line := "u:$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(sum[:])
	p, err := ParsePasswords(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Check("u", []byte("pw")) {
		t.Error("password then salt does not verify")
	}
	reversed := sha512.Sum512(append(append([]byte{}, salt...), "pw"...))
	line = "u:$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(reversed[:])
	if p, err = ParsePasswords(strings.NewReader(line)); err != nil {
		t.Fatal(err)
	}
	if p.Check("u", []byte("pw")) {
		t.Error("salt then password verifies; the order must matter")
	}
}

const (
	aliceHash = "$7$101$jQQM3ARSGPuOv479$MD6bHF9pam3z9UBi50ELliA/hFObCWYamJHeuSqjcVVBSPuuhS8QyClppnhlyDidMcZyrLaAplb2/aBOmF6wVw=="
	carolHash = "$6$4hXzsLiUDLc4aH0u$Ozx5mqdvitYEd3nQU0FVreSipj7rRBjzAjV3kCNeLeta9UCTlbRJ4KuZK9f0/suHfLOhuI+SFIPUaFpBXvAHhA=="
)

func TestParsePasswords_Lines(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		wantUser string // checked with its password when the input parses
		wantPass string
		wantLine int // 0: parses
		wantErr  error
	}{
		{name: "comments and blank lines", input: "# users\n\n   \nalice:" + aliceHash + "\n", wantUser: "alice", wantPass: "secret"},
		{name: "CRLF line endings", input: "# x\r\nalice:" + aliceHash + "\r\n", wantUser: "alice", wantPass: "secret"},
		{name: "blanks around fields trimmed", input: "  alice : " + aliceHash + " \t\n", wantUser: "alice", wantPass: "secret"},
		{name: "text after a second colon ignored", input: "carol:" + carolHash + ":old\n", wantUser: "carol", wantPass: "hunter2"},
		{name: "no final newline", input: "carol:" + carolHash, wantUser: "carol", wantPass: "hunter2"},
		{name: "no colon", input: "# c\nalice " + aliceHash, wantLine: 2, wantErr: ErrSyntax},
		{name: "empty user", input: ":" + aliceHash, wantLine: 1, wantErr: ErrSyntax},
		{name: "empty hash", input: "alice:\n", wantLine: 1, wantErr: ErrSyntax},
		{name: "plain-text password", input: "alice:" + aliceHash + "\nbob:secret\n", wantLine: 2, wantErr: ErrUnsupportedHash},
		{name: "sha512-crypt $5$ type", input: "alice:$5$abc$def", wantLine: 1, wantErr: ErrUnsupportedHash},
		{name: "$7$ missing field", input: "alice:$7$101$jQQM3ARSGPuOv479", wantLine: 1, wantErr: ErrInvalidHash},
		{name: "$7$ zero iterations", input: "alice:" + strings.Replace(aliceHash, "$101$", "$0$", 1), wantLine: 1, wantErr: ErrInvalidHash},
		{name: "$7$ iterations not a number", input: "alice:" + strings.Replace(aliceHash, "$101$", "$1x$", 1), wantLine: 1, wantErr: ErrInvalidHash},
		{name: "$6$ salt not base64", input: "carol:$6$!!!$" + carolHash[len("$6$4hXzsLiUDLc4aH0u$"):], wantLine: 1, wantErr: ErrInvalidHash},
		{name: "$6$ salt wrong length", input: "carol:$6$AAAA$" + carolHash[len("$6$4hXzsLiUDLc4aH0u$"):], wantLine: 1, wantErr: ErrInvalidHash},
		{name: "$6$ hash truncated", input: "carol:" + carolHash[:60], wantLine: 1, wantErr: ErrInvalidHash},
		{name: "duplicate user", input: "alice:" + aliceHash + "\n#\nalice:" + aliceHash, wantLine: 3, wantErr: ErrDuplicateUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePasswords(strings.NewReader(tt.input))
			if tt.wantLine == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !p.Check(tt.wantUser, []byte(tt.wantPass)) {
					t.Errorf("Check(%q) failed after parsing", tt.wantUser)
				}
				return
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LineError", err)
			}
			if le.Line != tt.wantLine {
				t.Errorf("line = %d, want %d (%v)", le.Line, tt.wantLine, err)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
		})
	}
}

func TestLoadPasswordFile_ErrorNamesPathAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(path, []byte("alice:"+aliceHash+"\n\nbob:plain\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadPasswordFile(path)
	if err == nil || !strings.Contains(err.Error(), path+":3:") || !errors.Is(err, ErrUnsupportedHash) {
		t.Fatalf("error = %v, want it to name %s:3 and wrap ErrUnsupportedHash", err, path)
	}
}

func TestLoadPasswordFile_MissingFile(t *testing.T) {
	_, err := LoadPasswordFile(filepath.Join(t.TempDir(), "absent"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error = %v, want os.ErrNotExist", err)
	}
}

func TestCheck_NilPasswordsKnowsNoUser(t *testing.T) {
	var p *Passwords
	if p.Check("alice", []byte("secret")) || p.Len() != 0 {
		t.Error("nil *Passwords accepted a user")
	}
}

func BenchmarkCheck_PBKDF2(b *testing.B) {
	p, err := LoadPasswordFile(filepath.Join("testdata", "passwd_pbkdf2"))
	if err != nil {
		b.Fatal(err)
	}
	pw := []byte("secret")
	for b.Loop() {
		if !p.Check("alice", pw) {
			b.Fatal("rejected")
		}
	}
}
