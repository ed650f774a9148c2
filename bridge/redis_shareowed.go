package bridge

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/bridgemq/server/broker"
	"github.com/redis/go-redis/v9"
)

// What a replica's members owe their shared subscription groups (section
// 4.8.2), kept in Redis so that a replica that dies without handing it
// back (SIGKILL, a crash, a lost machine) does not lose it. The hash
// <p>shareowed:<node> holds, per message this replica took for a group
// and that one of its members has not finished, the message's envelope
// (field <message id hex>:<group>). Only QoS ≥ 1 messages are recorded.
//
//   - Written before a member gets the message: with the claim, in its
//     pipeline, for the preferred replica's claims (a claim lost costs an
//     HDEL); after the claim for a fallback claim won (the fallbacks of
//     the other replicas mostly lose: they write nothing); before the
//     members get what this replica took from a hand-off list.
//   - Removed when the member is done with it (Cluster.SharedDone, from
//     the session): QoS 1 acknowledged; QoS 2 before it is written to the
//     member, which then keeps it [MQTT-4.8.2-5]; QoS 0 (a QoS ≥ 1 message
//     at a member's QoS 0 grant) sent; dropped; kept by a stored session.
//     These are batched by the share loop, except QoS 2's, which the
//     writer waits for. A message handed off to the group's list loses its
//     field in the same pipeline as its RPUSH, the HDEL first, so that no
//     replica taking it from the list can write its own field before.
//   - Moved by the survivor that reaps a dead replica (reapNode): every
//     field's message goes to its group's hand-off list, with the
//     announcement, the field removed in the push's pipeline, so a live
//     member of the group gets it.
//
// The hash and the lists are different keys: no command, transaction or
// script spans two of them (Redis Cluster).

// Tuning of the records of owed shared messages.
const (
	// shareOwedScan is the HSCAN page size when a reaper reads a dead
	// replica's hash.
	shareOwedScan = 500
	// shareDoneMax bounds the fields waiting to be removed while Redis
	// does not answer; beyond it the oldest are forgotten here (the
	// hash keeps them: a reaper may give them to a member again).
	shareDoneMax = 1 << 16
)

func (r *Redis) shareOwedKey(node string) string { return r.prefix + "shareowed:" + node }

// owedField is m's field in a replica's hash of owed messages of group.
func owedField(m *Message, group string) string {
	return hex.EncodeToString(m.ID[:]) + ":" + group
}

// owedGroup returns the group of an owedField, and false for a field
// that is not one.
func owedGroup(field string) (string, bool) {
	const n = 2 * len(ID{})
	if len(field) <= n+1 || field[n] != ':' {
		return "", false
	}
	if _, err := hex.DecodeString(field[:n]); err != nil {
		return "", false
	}
	return field[n+1:], true
}

// owedValues returns the HSET arguments (field, envelope, ...) recording
// the QoS ≥ 1 messages of claims as owed by this replica's members.
func owedValues(claims []shareClaim) []any {
	var args []any
	for _, c := range claims {
		if c.msg.QoS == 0 {
			continue
		}
		args = append(args, owedField(c.msg, c.group), AppendEnvelope(make([]byte, 0, EnvelopeSize(c.msg)), c.msg, ""))
	}
	return args
}

// SharedDone implements broker.Cluster: the fields of ds's QoS ≥ 1
// messages leave this replica's hash of owed messages, at once with wait
// (queued for the share loop should Redis not answer), else batched by
// the share loop.
func (r *Redis) SharedDone(ctx context.Context, ds []broker.SharedDelivery, wait bool) error {
	fields := make([]string, 0, len(ds))
	for _, d := range ds {
		if d.Message != nil && d.Message.QoS > 0 {
			fields = append(fields, owedField(d.Message, d.Group))
		}
	}
	if len(fields) == 0 {
		return nil
	}
	if wait {
		err := r.rdb.HDel(ctx, r.shareOwedKey(r.node), fields...).Err()
		if err == nil {
			return nil
		}
		r.forgetOwed(fields)
		return unavailable("forget shared messages sent", err)
	}
	r.forgetOwed(fields)
	return nil
}

// forgetOwed queues fields for the share loop to remove from this
// replica's hash of owed messages.
func (r *Redis) forgetOwed(fields []string) {
	s := r.shares
	s.mu.Lock()
	s.done = append(s.done, fields...)
	if over := len(s.done) - shareDoneMax; over > 0 {
		s.done = slices.Delete(s.done, 0, over)
		r.stats.shareOwedStale.Add(int64(over))
	}
	s.mu.Unlock()
	signal(s.wake)
}

// flushDone removes the queued fields from this replica's hash of owed
// messages, in one HDEL; on an error they wait for the next look.
func (r *Redis) flushDone() {
	s := r.shares
	s.mu.Lock()
	fields := s.done
	s.done = nil
	s.mu.Unlock()
	if len(fields) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, barrierTimeout)
	defer cancel()
	if err := r.rdb.HDel(ctx, r.shareOwedKey(r.node), fields...).Err(); err != nil {
		r.log.Warn("owed shared messages not forgotten; trying again", "messages", len(fields), "err", err)
		s.mu.Lock()
		s.done = append(fields, s.done...)
		s.mu.Unlock()
	}
}

// owedMessage is one message of a dead replica's hash of owed messages.
type owedMessage struct {
	field, env string
	msg        Message
}

// groupOwed sorts the entries of a hash of owed messages by group, each
// group's in the order they were published (time, then id), and returns
// the groups in order and the fields that are not an owed message's.
func groupOwed(owed map[string]string) (groups []string, byGroup map[string][]owedMessage, bad []string) {
	byGroup = make(map[string][]owedMessage)
	for field, env := range owed {
		group, ok := owedGroup(field)
		var o owedMessage
		if ok {
			_, err := DecodeEnvelope(env, &o.msg)
			ok = err == nil
		}
		if !ok {
			bad = append(bad, field)
			continue
		}
		o.field, o.env = field, env
		if byGroup[group] == nil {
			groups = append(groups, group)
		}
		byGroup[group] = append(byGroup[group], o)
	}
	slices.Sort(groups)
	slices.Sort(bad)
	for _, list := range byGroup {
		slices.SortFunc(list, func(a, b owedMessage) int {
			if c := a.msg.Time.Compare(b.msg.Time); c != 0 {
				return c
			}
			return cmp.Compare(hex.EncodeToString(a.msg.ID[:]), hex.EncodeToString(b.msg.ID[:]))
		})
	}
	return groups, byGroup, bad
}

// moveOwed gives every message node's members owed (node died) to its
// group's hand-off list, announced, for a live member to take, and
// removes each from node's hash in the push's pipeline. A reaper that
// fails half way leaves the rest for the next one.
func (r *Redis) moveOwed(ctx context.Context, node string) error {
	key := r.shareOwedKey(node)
	owed := make(map[string]string)
	var cursor uint64
	for {
		kv, next, err := r.rdb.HScan(ctx, key, cursor, "", shareOwedScan).Result()
		if err != nil {
			return unavailable("read dead node's owed shared messages", err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			owed[kv[i]] = kv[i+1] // HSCAN may return a field twice
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(owed) == 0 {
		return nil
	}
	groups, byGroup, bad := groupOwed(owed)
	moved := 0
	for _, g := range groups {
		for list := range slices.Chunk(byGroup[g], shareHandoffBatch) {
			fields := make([]string, len(list))
			envs := make([]any, len(list))
			for i, o := range list {
				fields[i], envs[i] = o.field, o.env
			}
			if err := r.pushEnvs(ctx, node, g, fields, envs); err != nil {
				return fmt.Errorf("move owed shared messages of %s: %w", g, err)
			}
			moved += len(list)
		}
	}
	if len(bad) > 0 {
		r.stats.decodeErrors.Add(int64(len(bad)))
		if err := r.rdb.HDel(ctx, key, bad...).Err(); err != nil {
			return unavailable("remove owed shared messages that do not decode", err)
		}
	}
	r.stats.shareOwedMoved.Add(int64(moved))
	r.log.Info("shared messages a dead node's members owed handed to their groups", "dead", node, "messages", moved, "groups", len(groups))
	return nil
}

// pushEnvs appends envs, messages owed by node's members (fields of its
// hash), to group's hand-off list and announces the group, and removes
// fields in the same pipeline. This replica's fields go first: this
// replica may take a message from the list at once and record it again
// (takeShared), which must come after. A dead replica's go after the
// push: a reaper that fails in between leaves a message twice (in the
// list and for the next reaper), never none. A field of this replica not
// removed is removed later (forgetOwed).
func (r *Redis) pushEnvs(ctx context.Context, node, group string, fields []string, envs []any) error {
	key := r.shareQueueKey(group)
	own := node == r.node
	var hdel, push *redis.IntCmd
	_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if own && len(fields) > 0 {
			hdel = p.HDel(ctx, r.shareOwedKey(node), fields...)
		}
		push = p.RPush(ctx, key, envs...)
		p.PExpire(ctx, key, shareHandoffTTL)
		if !own && len(fields) > 0 {
			hdel = p.HDel(ctx, r.shareOwedKey(node), fields...)
		}
		return nil
	})
	if !own && hdel != nil && hdel.Err() != nil && push.Err() == nil {
		return unavailable("remove moved owed shared messages", hdel.Err())
	}
	if err := push.Err(); err != nil {
		return unavailable("hand off shared messages", err)
	}
	if own && hdel != nil && hdel.Err() != nil {
		r.forgetOwed(fields)
	}
	r.stats.shareHandedOff.Add(int64(len(envs)))
	// The announcement only hastens the others: they also look every
	// shareRefresh.
	_ = r.rdb.Publish(ctx, r.shareQueueChannel(), group).Err()
	return nil
}
