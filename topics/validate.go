package topics

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidTopic is wrapped by every error ValidateTopicName returns.
var ErrInvalidTopic = errors.New("invalid topic name")

// ErrInvalidFilter is wrapped by every error ValidateFilter returns.
var ErrInvalidFilter = errors.New("invalid topic filter")

// MaxLength is the largest size in bytes of a topic name or filter: a UTF-8
// encoded string on the wire has a two-byte length [MQTT-4.7.3-3].
const MaxLength = 65535

// ValidateTopicName reports whether name may be used as the topic of a
// PUBLISH. The returned error wraps ErrInvalidTopic and names the rule.
func ValidateTopicName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty [MQTT-4.7.3-1]", ErrInvalidTopic)
	}
	if reason := checkString(name); reason != "" {
		return fmt.Errorf("%w: %s", ErrInvalidTopic, reason)
	}
	if strings.ContainsAny(name, "+#") {
		return fmt.Errorf("%w: wildcard character in a topic name [MQTT-3.3.2-2] [MQTT-4.7.1-1]", ErrInvalidTopic)
	}
	return nil
}

// ValidateFilter reports whether filter may be used in a SUBSCRIBE or
// UNSUBSCRIBE. The returned error wraps ErrInvalidFilter and names the rule.
func ValidateFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty [MQTT-4.7.3-1]", ErrInvalidFilter)
	}
	if reason := checkString(filter); reason != "" {
		return fmt.Errorf("%w: %s", ErrInvalidFilter, reason)
	}
	for start := 0; start <= len(filter); {
		end := levelEnd(filter, start)
		level := filter[start:end]
		if strings.IndexByte(level, '#') >= 0 {
			if level != "#" {
				return fmt.Errorf("%w: '#' must occupy a whole level [MQTT-4.7.1-2]", ErrInvalidFilter)
			}
			if end != len(filter) {
				return fmt.Errorf("%w: '#' must be the last level [MQTT-4.7.1-2]", ErrInvalidFilter)
			}
		}
		if strings.IndexByte(level, '+') >= 0 && level != "+" {
			return fmt.Errorf("%w: '+' must occupy a whole level [MQTT-4.7.1-3]", ErrInvalidFilter)
		}
		start = end + 1
	}
	return nil
}

// ErrOverLimit is wrapped by every error CheckLimits returns.
var ErrOverLimit = errors.New("over the server's limit")

// CheckLimits reports whether a valid topic name or filter is within the
// server's limits: at most maxLength bytes and maxLevels levels (0 = no
// limit). The protocol allows 65,535 bytes [MQTT-4.7.3-3] and any number
// of levels; a server may refuse less (section 4.7.3 leaves it to the
// implementation), and the error names the limit for the log.
func CheckLimits(s string, maxLength, maxLevels int) error {
	if maxLength > 0 && len(s) > maxLength {
		return fmt.Errorf("%w: %d bytes, more than -max-topic-length %d", ErrOverLimit, len(s), maxLength)
	}
	if maxLevels > 0 {
		if n := strings.Count(s, "/") + 1; n > maxLevels {
			return fmt.Errorf("%w: %d levels, more than -max-topic-levels %d", ErrOverLimit, n, maxLevels)
		}
	}
	return nil
}

// HasWildcard reports whether filter contains '+' or '#', that is whether it
// can match more than the one topic name equal to it.
func HasWildcard(filter string) bool {
	return strings.IndexByte(filter, '+') >= 0 || strings.IndexByte(filter, '#') >= 0
}

// checkString applies the rules common to topic names and filters and
// returns the broken one, or "" when s is acceptable.
func checkString(s string) string {
	if len(s) > MaxLength {
		return fmt.Sprintf("%d bytes, more than %d [MQTT-4.7.3-3]", len(s), MaxLength)
	}
	if !utf8.ValidString(s) {
		// Go rejects surrogates U+D800..U+DFFF as well, as the spec asks.
		return "ill-formed UTF-8 [MQTT-1.5.3-1]"
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "contains U+0000 [MQTT-1.5.3-2] [MQTT-4.7.3-2]"
	}
	return ""
}

// levelEnd returns the index of the '/' ending the level that starts at
// start, or len(s) for the last level.
func levelEnd(s string, start int) int {
	if i := strings.IndexByte(s[start:], '/'); i >= 0 {
		return start + i
	}
	return len(s)
}
