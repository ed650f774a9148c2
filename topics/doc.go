// Package topics holds the MQTT topic logic shared by every part of the
// server: validation of topic names and filters, filter matching with the
// '$'-topic rule, the subscription trie a replica uses to find local
// subscribers, and the retained-topic index that answers wildcard lookups
// in O(matches).
//
// The package is pure MQTT: it knows nothing of the network or of Redis
// (the translation of filters into Redis channels and patterns lives in
// bridge/pattern), and is safe to use from any goroutine where a type says
// so.
//
// Topic levels are the strings between '/' separators. Empty levels are
// levels: "a//b" has three levels and "/a" has two, the first one empty
// [MQTT-4.7.1-1 non-normative text, section 4.7.3].
package topics
