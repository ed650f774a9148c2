package topics

import (
	"fmt"
	"strings"
)

// SharePrefix starts the filter of a Shared Subscription (section 4.8.2).
const SharePrefix = "$share/"

// IsShared reports whether filter names a Shared Subscription: it starts
// with "$share/", valid or not.
func IsShared(filter string) bool { return strings.HasPrefix(filter, SharePrefix) }

// ParseShared splits a Shared Subscription's filter "$share/{ShareName}/{filter}"
// into its ShareName and the filter messages are matched with. ok is false
// for a filter that does not start with "$share/". The error wraps
// ErrInvalidFilter: a ShareName that is empty or holds '/', '+' or '#'
// [MQTT-4.8.2-1], or no filter after it [MQTT-4.8.2-2], or a filter that
// ValidateFilter refuses.
func ParseShared(filter string) (name, plain string, ok bool, err error) {
	if !IsShared(filter) {
		return "", "", false, nil
	}
	rest := filter[len(SharePrefix):]
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return "", "", true, fmt.Errorf("%w: shared subscription without a topic filter [MQTT-4.8.2-2]", ErrInvalidFilter)
	}
	name, plain = rest[:slash], rest[slash+1:]
	if name == "" || strings.ContainsAny(name, "+#") {
		return "", "", true, fmt.Errorf("%w: ShareName empty or with a wildcard [MQTT-4.8.2-1]", ErrInvalidFilter)
	}
	if plain == "" {
		return "", "", true, fmt.Errorf("%w: shared subscription without a topic filter [MQTT-4.8.2-2]", ErrInvalidFilter)
	}
	if err := ValidateFilter(plain); err != nil {
		return "", "", true, err
	}
	return name, plain, true, nil
}

// MatchSubscription is Match for a filter that may be a Shared
// Subscription's: "$share/{ShareName}/{filter}" matches what its filter
// matches.
func MatchSubscription(filter, topic string) bool {
	if _, plain, ok, err := ParseShared(filter); ok {
		return err == nil && Match(plain, topic)
	}
	return Match(filter, topic)
}
