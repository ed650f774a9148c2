package topics

import (
	"errors"
	"testing"
)

func TestParseShared_MQTT_4_8_2_1_and_4_8_2_2(t *testing.T) {
	for _, tc := range []struct {
		filter      string
		name, plain string
		shared, bad bool
	}{
		{filter: "a/b"},
		{filter: "$SYS/#"},
		{filter: "$share/g/a/b", name: "g", plain: "a/b", shared: true},
		{filter: "$share/g/#", name: "g", plain: "#", shared: true},
		{filter: "$share/g/+/x", name: "g", plain: "+/x", shared: true},
		{filter: "$share/g//", name: "g", plain: "/", shared: true},
		{filter: "$share//a", shared: true, bad: true},  // empty ShareName [MQTT-4.8.2-1]
		{filter: "$share/+/a", shared: true, bad: true}, // wildcard in ShareName [MQTT-4.8.2-1]
		{filter: "$share/g#/a", shared: true, bad: true},
		{filter: "$share/g", shared: true, bad: true},  // no filter [MQTT-4.8.2-2]
		{filter: "$share/g/", shared: true, bad: true}, // empty filter [MQTT-4.8.2-2]
		{filter: "$share/g/a/#/b", shared: true, bad: true},
	} {
		name, plain, shared, err := ParseShared(tc.filter)
		if shared != tc.shared || (err != nil) != tc.bad || name != tc.name || plain != tc.plain {
			t.Errorf("ParseShared(%q) = %q, %q, %v, %v", tc.filter, name, plain, shared, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("ParseShared(%q): %v does not wrap ErrInvalidFilter", tc.filter, err)
		}
	}
}

func TestMatchSubscription(t *testing.T) {
	if !MatchSubscription("$share/g/a/+", "a/b") || MatchSubscription("$share/g/a/+", "$share/g/a/b") {
		t.Error("a shared filter matches what its filter matches")
	}
	if !MatchSubscription("a/+", "a/b") || MatchSubscription("$share/+/a", "a") {
		t.Error("MatchSubscription")
	}
}
