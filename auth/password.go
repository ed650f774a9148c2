package auth

import (
	"bufio"
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Sizes Mosquitto requires of a decoded hash entry; anything else is rejected
// when the file is loaded (unpwd__decode_passwords in Mosquitto's
// src/security_default.c: salt_len == 12, password_len == 64).
const (
	saltLen = 12
	hashLen = sha512.Size
)

// defaultIterations is mosquitto_passwd's PBKDF2 iteration count (2.0.x writes
// "$7$101$..."). It sizes the decoy hash computed for unknown users.
const defaultIterations = 101

// hashKind is the algorithm of one password file entry.
type hashKind uint8

const (
	// hashSHA512 is Mosquitto 1.x "$6$<salt>$<hash>": one SHA-512 over the
	// password bytes followed by the salt bytes (pw__hash, pw_sha512 branch:
	// EVP_DigestUpdate(password) then EVP_DigestUpdate(salt)). Not sha512-crypt.
	hashSHA512 hashKind = iota + 1
	// hashPBKDF2 is Mosquitto 2.x "$7$<iterations>$<salt>$<hash>":
	// PKCS5_PBKDF2_HMAC(password, salt, iterations, sha512, 64).
	hashPBKDF2
	// hashSaltedSHA256 is EMQX's "sha256" password_hash_algorithm with
	// salt_position "prefix": hex(SHA-256(salt + password)), the salt in a
	// field of its own (only found in Redis user records).
	hashSaltedSHA256
)

// passwordHash is one decoded password file entry.
type passwordHash struct {
	kind       hashKind
	iterations int
	salt       []byte
	hash       []byte
}

// digest hashes password the way this entry was hashed.
func (h *passwordHash) digest(password []byte) []byte {
	switch h.kind {
	case hashSHA512:
		d := sha512.New()
		d.Write(password)
		d.Write(h.salt)
		return d.Sum(nil)
	case hashPBKDF2:
		key, err := pbkdf2.Key(sha512.New, string(password), h.salt, h.iterations, hashLen)
		if err != nil {
			return nil
		}
		return key
	case hashSaltedSHA256:
		d := sha256.New()
		d.Write(h.salt)
		d.Write(password)
		return d.Sum(nil)
	}
	return nil
}

// decoy is hashed for unknown users so that a failed login costs about the
// same whether or not the user exists.
var decoy = passwordHash{kind: hashPBKDF2, iterations: defaultIterations, salt: make([]byte, saltLen), hash: make([]byte, hashLen)}

// Passwords holds the users of a Mosquitto password file. It is immutable and
// safe for concurrent use.
type Passwords struct {
	users map[string]passwordHash
}

// LoadPasswordFile reads a password file in the format mosquitto_passwd
// writes. Errors name the path and, for a bad line, its line number.
func LoadPasswordFile(path string) (*Passwords, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open password file: %w", err)
	}
	defer f.Close()
	p, err := ParsePasswords(f)
	if err != nil {
		return nil, fmt.Errorf("password file %w", withPath(err, path))
	}
	return p, nil
}

// ParsePasswords reads "user:hash" lines. Blank lines and lines starting with
// '#' are ignored; blanks around the user name and the hash are trimmed, as
// Mosquitto does. Unlike Mosquitto, which logs and drops an entry it cannot
// decode, a bad line is an error here: a silently missing user is worse than
// a broker that refuses to start.
func ParsePasswords(r io.Reader) (*Passwords, error) {
	p := &Passwords{users: make(map[string]passwordHash)}
	firstSeen := make(map[string]int)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := trimBlanks(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		user, hash = trimBlanks(user), trimBlanks(hash)
		if !ok || user == "" || hash == "" {
			return nil, &LineError{Line: lineNo, Err: fmt.Errorf("%w: want user:hash", ErrSyntax)}
		}
		// Mosquitto splits with strtok(":"), so anything after a second ':' is
		// ignored; a hash itself never contains ':'.
		hash, _, _ = strings.Cut(hash, ":")
		h, err := parseHash(hash)
		if err != nil {
			return nil, &LineError{Line: lineNo, Err: fmt.Errorf("user %q: %w", user, err)}
		}
		if first, dup := firstSeen[user]; dup {
			return nil, &LineError{Line: lineNo, Err: fmt.Errorf("%w %q (first on line %d)", ErrDuplicateUser, user, first)}
		}
		firstSeen[user] = lineNo
		p.users[user] = h
	}
	if err := sc.Err(); err != nil {
		return nil, &LineError{Line: lineNo + 1, Err: fmt.Errorf("read: %w", err)}
	}
	return p, nil
}

// parseHash decodes "$6$salt$hash" or "$7$iterations$salt$hash".
func parseHash(s string) (passwordHash, error) {
	fields := strings.Split(s, "$")
	if len(fields) < 2 || fields[0] != "" {
		return passwordHash{}, fmt.Errorf("%w: does not start with $6$ or $7$", ErrUnsupportedHash)
	}
	var h passwordHash
	switch fields[1] {
	case "6":
		if len(fields) != 4 {
			return passwordHash{}, fmt.Errorf("%w: want $6$<salt>$<hash>", ErrInvalidHash)
		}
		h.kind = hashSHA512
		fields = fields[2:]
	case "7":
		if len(fields) != 5 {
			return passwordHash{}, fmt.Errorf("%w: want $7$<iterations>$<salt>$<hash>", ErrInvalidHash)
		}
		n, err := strconv.Atoi(fields[2])
		if err != nil || n < 1 {
			return passwordHash{}, fmt.Errorf("%w: iterations %q", ErrInvalidHash, fields[2])
		}
		h.kind, h.iterations = hashPBKDF2, n
		fields = fields[3:]
	default:
		return passwordHash{}, fmt.Errorf("%w: type $%s$ (plain-text passwords must be hashed with mosquitto_passwd -U)", ErrUnsupportedHash, fields[1])
	}
	salt, err := base64.StdEncoding.DecodeString(fields[0])
	if err != nil || len(salt) != saltLen {
		return passwordHash{}, fmt.Errorf("%w: salt must be %d base64 bytes", ErrInvalidHash, saltLen)
	}
	sum, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil || len(sum) != hashLen {
		return passwordHash{}, fmt.Errorf("%w: hash must be %d base64 bytes", ErrInvalidHash, hashLen)
	}
	h.salt, h.hash = salt, sum
	return h, nil
}

// Check reports whether password is username's password. The comparison is
// constant-time, and an unknown user costs a decoy hash so that response
// times do not reveal which user names exist. A nil *Passwords knows no users.
//
// A password holding a NUL byte never matches. mosquitto_passwd cannot store
// one (passwords are C strings), Mosquitto would compare only up to the NUL,
// and HMAC zero-pads short keys so PBKDF2 cannot tell "pw" from "pw\x00".
func (p *Passwords) Check(username string, password []byte) bool {
	var h passwordHash
	known := false
	if p != nil {
		h, known = p.users[username]
	}
	return checkHash(h, known, password)
}

// checkHash reports whether password matches h. When the user is not
// known, a decoy is hashed instead so that the answer takes as long.
func checkHash(h passwordHash, known bool, password []byte) bool {
	if !known {
		h = decoy
	}
	got := h.digest(password)
	match := len(got) == len(h.hash) && subtle.ConstantTimeCompare(got, h.hash) == 1
	return known && match && bytes.IndexByte(password, 0) < 0
}

// Len returns the number of users in the file.
func (p *Passwords) Len() int {
	if p == nil {
		return 0
	}
	return len(p.users)
}

// trimBlanks removes what C's isspace counts as blank from both ends, as
// Mosquitto's misc__trimblanks does.
func trimBlanks(s string) string { return strings.Trim(s, " \t\n\v\f\r") }

// HashPassword returns password hashed as mosquitto_passwd 2.0 does by
// default: "$7$101$<salt>$<hash>", PBKDF2-HMAC-SHA512 over a random 12-byte
// salt, both base64. A password file line is "user:" followed by it.
func HashPassword(password string) (string, error) {
	if strings.IndexByte(password, 0) >= 0 {
		return "", fmt.Errorf("%w: a password cannot hold a NUL byte", ErrInvalidHash)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, defaultIterations, hashLen)
	if err != nil {
		return "", fmt.Errorf("pbkdf2: %w", err)
	}
	return fmt.Sprintf("$7$%d$%s$%s", defaultIterations, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key)), nil
}

// parseStoredHash decodes a Redis user record's password_hash and salt
// fields: a mosquitto_passwd hash ("$7$…" or "$6$…", which carries its own
// salt, so the salt field is ignored), or EMQX's salted SHA-256 as 64 hex
// digits (salt_position prefix).
func parseStoredHash(stored, salt string) (passwordHash, error) {
	if strings.HasPrefix(stored, "$") {
		return parseHash(stored)
	}
	sum, err := hex.DecodeString(stored)
	if err != nil || len(sum) != sha256.Size {
		return passwordHash{}, fmt.Errorf("%w: want $7$…, $6$… or 64 hex digits of salted SHA-256", ErrUnsupportedHash)
	}
	return passwordHash{kind: hashSaltedSHA256, salt: []byte(salt), hash: sum}, nil
}
