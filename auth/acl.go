package auth

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bridgemq/server/topics"
)

// access is the set of operations an ACL rule grants; deny grants none and
// refuses every operation on the topics it matches.
type access uint8

const (
	accessRead  access = 1 << iota // receive messages; subscribe
	accessWrite                    // publish
	accessDeny  access = 0
)

// rule is one "topic" or "pattern" line.
type rule struct {
	filter string
	access access
	// usesClientID and usesUsername mark a pattern holding "%c" or "%u".
	usesClientID, usesUsername bool
}

// rules is one list of rules with Mosquitto's evaluation order: every deny
// rule before any grant (add__acl puts "deny" lines at the front).
type rules struct {
	deny  []rule
	grant []rule
}

func (rs *rules) add(r rule) {
	if r.access == accessDeny {
		rs.deny = append(rs.deny, r)
	} else {
		rs.grant = append(rs.grant, r)
	}
}

func (rs *rules) empty() bool { return len(rs.deny) == 0 && len(rs.grant) == 0 }

// ACL is a parsed Mosquitto acl_file. It is immutable and safe for concurrent
// use. A client with no rule granting an operation is refused it.
type ACL struct {
	anonymous rules             // "topic" lines before any "user" line
	users     map[string]*rules // "topic" lines under "user <name>"
	patterns  rules             // "pattern" lines, for every client
}

// LoadACLFile reads a Mosquitto acl_file. Errors name the path and line.
func LoadACLFile(path string) (*ACL, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open acl file: %w", err)
	}
	defer f.Close()
	a, err := ParseACL(f)
	if err != nil {
		return nil, fmt.Errorf("acl file %w", withPath(err, path))
	}
	return a, nil
}

// ParseACL reads acl_file lines the way Mosquitto 2.0 does (aclfile__parse):
//
//	user <name>                                   following topic lines are name's
//	topic [read|write|readwrite|deny] <filter>    access defaults to readwrite
//	pattern [read|write|readwrite|deny] <filter>  every client; %c, %u substituted
//
// Words are separated by spaces; the filter is the rest of the line, so it may
// contain spaces when the access word is given ("topic read a b" is filter
// "a b", but "topic a b" is an unknown access word "a", as in Mosquitto).
// Blank lines and lines starting with '#' are ignored.
func ParseACL(r io.Reader) (*ACL, error) {
	a := &ACL{users: make(map[string]*rules)}
	current := &a.anonymous
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := trimBlanks(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		keyword, rest := nextWord(line)
		switch keyword {
		case "user":
			name := trimBlanks(rest)
			if name == "" {
				return nil, &LineError{Line: lineNo, Err: fmt.Errorf("%w: user without a name", ErrSyntax)}
			}
			if a.users[name] == nil {
				a.users[name] = &rules{}
			}
			current = a.users[name]
		case "topic", "pattern":
			rl, err := parseRule(keyword == "pattern", rest)
			if err != nil {
				return nil, &LineError{Line: lineNo, Err: err}
			}
			if keyword == "pattern" {
				a.patterns.add(rl)
			} else {
				current.add(rl)
			}
		default:
			return nil, &LineError{Line: lineNo, Err: fmt.Errorf("%w: unknown keyword %q (want user, topic or pattern)", ErrSyntax, keyword)}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &LineError{Line: lineNo + 1, Err: fmt.Errorf("read: %w", err)}
	}
	return a, nil
}

// parseRule parses what follows "topic" or "pattern".
func parseRule(pattern bool, rest string) (rule, error) {
	word, after := nextWord(rest)
	if word == "" {
		return rule{}, fmt.Errorf("%w: missing topic", ErrSyntax)
	}
	r := rule{access: accessRead | accessWrite, filter: trimBlanks(after)}
	if r.filter == "" {
		// A single word is the topic itself, with the default access.
		r.filter = word
	} else {
		switch word {
		case "read":
			r.access = accessRead
		case "write":
			r.access = accessWrite
		case "readwrite":
			r.access = accessRead | accessWrite
		case "deny":
			r.access = accessDeny
		default:
			return rule{}, fmt.Errorf("%w: unknown access %q (want read, write, readwrite or deny)", ErrSyntax, word)
		}
	}
	if topics.ValidateFilter(r.filter) != nil {
		return rule{}, fmt.Errorf("%w %q", ErrInvalidFilter, r.filter)
	}
	if pattern {
		r.usesClientID = strings.Contains(r.filter, "%c")
		r.usesUsername = strings.Contains(r.filter, "%u")
	}
	return r, nil
}

// nextWord splits off the first space-separated word, skipping leading spaces
// as strtok(" ") does.
func nextWord(s string) (word, rest string) {
	s = strings.TrimLeft(s, " ")
	word, rest, _ = strings.Cut(s, " ")
	return word, rest
}

// CanSubscribe reports whether the client may subscribe to filter. The filter
// itself is checked: a rule covers it only if it covers every topic the filter
// can match (see subMatchesACL), and read access is required. Messages
// delivered through the subscription are still checked one by one (CanRead),
// so "topic deny a/b" plus "topic read #" grants a subscription to "#" but
// never delivers a/b.
//
// Mosquitto 2.0's acl_file does not check SUBSCRIBE at all (it grants every
// subscription and filters on delivery); refusing a filter the client could
// never receive anything through is stricter and tells the client at once.
func (a *ACL) CanSubscribe(clientID, username, filter string) bool {
	if topics.ValidateFilter(filter) != nil {
		return false
	}
	return a.check(clientID, username, filter, accessRead, subMatchesACL)
}

// CanRead reports whether a message on topic may be delivered to the client.
func (a *ACL) CanRead(clientID, username, topic string) bool {
	if topic == "" || strings.ContainsAny(topic, "+#") {
		return false
	}
	return a.check(clientID, username, topic, accessRead, topics.Match)
}

// CanWrite reports whether the client may publish to topic. A deny rule
// refuses writes as well as reads, as in Mosquitto.
func (a *ACL) CanWrite(clientID, username, topic string) bool {
	if topic == "" || strings.ContainsAny(topic, "+#") {
		return false
	}
	return a.check(clientID, username, topic, accessWrite, topics.Match)
}

// check is Mosquitto 2.0's mosquitto_acl_check_default: the client's own rules
// (its user section, or the anonymous section when username is ""), deny
// rules first, then the patterns, deny patterns first. The first matching
// deny refuses; the first matching rule granting want allows; nothing
// matching refuses. So a user's own grant wins over a pattern's deny, but
// within one list a deny always wins.
func (a *ACL) check(clientID, username, target string, want access, match func(filter, target string) bool) bool {
	if a == nil {
		return true
	}
	own := &a.anonymous
	if username != "" {
		own = a.users[username]
	}
	if own != nil {
		if verdict, decided := own.decide(target, want, match, nil); decided {
			return verdict
		}
	}
	if a.patterns.empty() {
		return false
	}
	// A client id or user name holding a wildcard would widen a pattern into
	// other clients' topics, so Mosquitto refuses such clients outright.
	if strings.ContainsAny(clientID, "+#") || strings.ContainsAny(username, "+#") {
		return false
	}
	verdict, _ := a.patterns.decide(target, want, match, &client{id: clientID, username: username})
	return verdict
}

// client identifies whom a pattern is expanded for.
type client struct{ id, username string }

// decide applies one rule list; decided is false when no rule matched. When
// forClient is non-nil the rules are patterns, expanded for that client first.
func (rs *rules) decide(target string, want access, match func(string, string) bool, forClient *client) (verdict, decided bool) {
	for i := range rs.deny {
		if f, ok := rs.deny[i].filterFor(forClient); ok && match(f, target) {
			return false, true
		}
	}
	for i := range rs.grant {
		r := &rs.grant[i]
		if r.access&want == 0 {
			continue
		}
		if f, ok := r.filterFor(forClient); ok && match(f, target) {
			return true, true
		}
	}
	return false, false
}

// filterFor returns the rule's filter, with %c and %u replaced when c is
// non-nil; false means the pattern does not apply to c.
func (r *rule) filterFor(c *client) (string, bool) {
	if c == nil {
		return r.filter, true
	}
	return substitute(r, c.id, c.username)
}

// substitute replaces "%c" with the client id and "%u" with the user name, as
// text anywhere in the pattern (Mosquitto 2.0). A pattern using %u does not
// apply to an anonymous client.
func substitute(r *rule, clientID, username string) (string, bool) {
	if r.usesUsername && username == "" {
		return "", false
	}
	if !r.usesClientID && !r.usesUsername {
		return r.filter, true
	}
	var b strings.Builder
	b.Grow(len(r.filter) + len(clientID) + len(username))
	f := r.filter
	for {
		i := strings.IndexByte(f, '%')
		if i < 0 || i == len(f)-1 {
			b.WriteString(f)
			return b.String(), true
		}
		b.WriteString(f[:i])
		switch f[i+1] {
		case 'c':
			b.WriteString(clientID)
			f = f[i+2:]
		case 'u':
			b.WriteString(username)
			f = f[i+2:]
		default:
			b.WriteByte('%')
			f = f[i+1:]
		}
	}
}
