package bridge

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// readRetainedIndex reads the set of retained topic names with SSCAN (the
// index, not a keyspace SCAN).
func (r *Redis) readRetainedIndex(ctx context.Context) ([]string, error) {
	var all []string
	var cursor uint64
	for {
		names, next, err := r.rdb.SScan(ctx, r.retainIndexKey(), cursor, "", 1000).Result()
		if err != nil {
			return nil, unavailable("load retained index", err)
		}
		all = append(all, names...)
		if cursor = next; cursor == 0 {
			return all, nil
		}
	}
}

// loadRetainedIndex reads the retained index and makes it the core's
// mirror. It runs on the reader goroutine, which also applies the
// announcements, so that none is applied to a mirror about to be replaced
// (broker.Receiver.ReplaceRetained).
func (r *Redis) loadRetainedIndex(ctx context.Context) error {
	names, err := r.readRetainedIndex(ctx)
	if err != nil {
		return err
	}
	r.core.ReplaceRetained(names)
	return nil
}

// applyRetainAnnouncement keeps the core's mirror current: "+topic" or
// "-topic".
func (r *Redis) applyRetainAnnouncement(a string) {
	if len(a) < 2 {
		return
	}
	switch a[0] {
	case '+':
		r.core.RetainedChanged(a[1:], true)
	case '-':
		r.core.RetainedChanged(a[1:], false)
	}
}

// RetainedSizes implements broker.Store: pipelined HSTRLENs per topic
// measure the payload and the encoded 5.0 properties, so that no more than
// a page's bytes is read into memory (a topic with none counts 0). A payload replaced by a larger one
// before RetainedRead can take the page past its bound by that difference,
// at most one -max-packet-size per message.
func (r *Redis) RetainedSizes(ctx context.Context, names []string) ([]int, error) {
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range names {
			p.HStrLen(ctx, r.retainKey(n), "payload")
			p.HStrLen(ctx, r.retainKey(n), "props")
		}
		return nil
	})
	if err != nil {
		return nil, unavailable("measure retained messages", err)
	}
	// Decoded, a User Property costs its two string headers (32 bytes)
	// beyond the 2 bytes it takes at least as stored here: the stored
	// properties count sixteen times, so that a page of messages with many
	// tiny User Properties stays near its bound in memory (a hostile review
	// saw 78 MB held per slow subscriber when they counted once).
	out := make([]int, len(names))
	for i := range out {
		out[i] = int(cmds[2*i].(*redis.IntCmd).Val() + 16*cmds[2*i+1].(*redis.IntCmd).Val())
	}
	return out, nil
}

// RetainedRead implements broker.Store: one pipelined HGETALL per topic.
func (r *Redis) RetainedRead(ctx context.Context, names []string) ([]*Message, error) {
	if len(names) == 0 {
		return nil, nil
	}
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range names {
			p.HGetAll(ctx, r.retainKey(n))
		}
		return nil
	})
	if err != nil {
		return nil, unavailable("read retained messages", err)
	}
	out := make([]*Message, 0, len(names))
	for i, c := range cmds {
		h := c.(*redis.MapStringStringCmd).Val()
		if len(h) == 0 {
			continue // cleared since the index said otherwise
		}
		m, err := retainedMessage(h)
		if err != nil {
			r.log.Error("skipping retained message that does not parse", "topic", names[i], "err", err)
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// retainedMessage reads an EMQX-layout retained hash.
func retainedMessage(h map[string]string) (*Message, error) {
	m := &Message{Topic: h["topic"], ClientID: h["from"], Payload: []byte(h["payload"]), Retain: true}
	if id, err := hex.DecodeString(h["id"]); err == nil && len(id) == len(m.ID) {
		copy(m.ID[:], id)
	}
	qos, err := strconv.Atoi(h["qos"])
	if err != nil || qos < 0 || qos > 2 {
		return nil, fmt.Errorf("retained %q: bad qos %q", m.Topic, h["qos"])
	}
	m.QoS = byte(qos)
	if ms, err := strconv.ParseInt(h["ts"], 10, 64); err == nil {
		m.Time = time.UnixMilli(ms)
	}
	if props := h["props"]; props != "" {
		if m.Properties, err = decodeProperties(props); err != nil {
			return nil, fmt.Errorf("retained %q: %w", m.Topic, err)
		}
	}
	return m, nil
}
