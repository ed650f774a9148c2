package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// Hand-offs of shared subscription messages between replicas (section
// 4.8.2). A replica gives a group's message to the group's members on the
// other replicas when none of its own can take it: a member went away
// with it unacknowledged or unsent (the core's HandBack), or the replica
// won the message's claim and its last member had just left (claimDue).
// The message goes to the group's list in Redis, <p>sharequeue:<group>
// (RPUSH, TTL shareHandoffTTL from the last push), and the replica
// announces the group on <p>ctl:sharequeue. Every replica with members of
// the group takes from the list's head (LPOP, so each message goes to one
// replica) on the announcement and every shareRefresh, and hands each
// message to its next live member; what none of its members can take goes
// back to the head, in order, for the next replica's look.

// Tuning of the hand-offs.
const (
	// shareHandoffTTL is how long a group's list of handed-off messages
	// waits for a member after its last push; then Redis drops it.
	shareHandoffTTL = shareClaimTTL
	// shareHandoffBatch is how many messages one LPOP takes.
	shareHandoffBatch = 100
)

func (r *Redis) shareQueueKey(group string) string { return r.prefix + "sharequeue:" + group }
func (r *Redis) shareQueueChannel() string         { return r.prefix + "ctl:sharequeue" }

// SharedElsewhere implements broker.Cluster: another replica counted
// members of group at the last refresh.
func (r *Redis) SharedElsewhere(group string) bool {
	s := r.shares
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.remote[group] {
		if n.members > 0 {
			return true
		}
	}
	return false
}

// HandOffShared implements broker.Cluster: msgs go to group's list in
// Redis, for a replica with members to take.
func (r *Redis) HandOffShared(ctx context.Context, group string, msgs []*Message) (bool, error) {
	if err := r.pushShared(ctx, group, msgs); err != nil {
		return false, err
	}
	return true, nil
}

// pushShared appends msgs to group's list of handed-off messages, renews
// its TTL, announces the group to every replica, and forgets that this
// replica's members owed them (redis_shareowed.go).
func (r *Redis) pushShared(ctx context.Context, group string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	envs := make([]any, len(msgs))
	fields := make([]string, 0, len(msgs))
	for i, m := range msgs {
		envs[i] = AppendEnvelope(make([]byte, 0, EnvelopeSize(m)), m, "")
		if m.QoS > 0 {
			fields = append(fields, owedField(m, group))
		}
	}
	return r.pushEnvs(ctx, r.node, group, fields, envs)
}

// shareQueued notes an announcement of group's list: this replica looks
// at it now if it has members of group.
func (r *Redis) shareQueued(group string) {
	s := r.shares
	s.mu.Lock()
	_, ok := s.local[group]
	if ok {
		s.drain[group] = struct{}{}
	}
	s.mu.Unlock()
	if ok {
		signal(s.wake)
	}
}

// drainAllShares makes the next drainShares look at the list of every
// group with members here (every shareRefresh: an announcement may have
// been missed, or came while no member could take).
func (r *Redis) drainAllShares() {
	s := r.shares
	s.mu.Lock()
	for g := range s.local {
		s.drain[g] = struct{}{}
	}
	s.mu.Unlock()
}

// drainShares takes the handed-off messages of the groups marked to look
// at and hands each to the group's next live member here (the core's
// DeliverShared); from the first one no member took, the rest go back to
// the list's head, in order.
func (r *Redis) drainShares() {
	s := r.shares
	s.mu.Lock()
	groups := make([]string, 0, len(s.drain))
	for g := range s.drain {
		if _, ok := s.local[g]; ok {
			groups = append(groups, g)
		}
	}
	clear(s.drain)
	s.mu.Unlock()
	if len(groups) == 0 {
		return
	}
	slices.Sort(groups)
	ctx, cancel := context.WithTimeout(r.ctx, barrierTimeout)
	defer cancel()
	cmds := make([]*redis.StringSliceCmd, len(groups))
	_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, g := range groups {
			cmds[i] = p.LPopCount(ctx, r.shareQueueKey(g), shareHandoffBatch)
		}
		return nil
	})
	var again bool
	var failed int
	var lastErr error
	for i, g := range groups {
		envs, err := cmds[i].Result()
		if err != nil {
			if !errors.Is(err, redis.Nil) {
				failed, lastErr = failed+1, err // read again at the next look
			}
			continue
		}
		back, fields := r.takeShared(ctx, g, envs)
		if len(back) > 0 {
			r.returnShared(ctx, g, back, fields)
		} else if len(envs) == shareHandoffBatch {
			s.mu.Lock()
			s.drain[g] = struct{}{}
			s.mu.Unlock()
			again = true
		}
	}
	if failed > 0 {
		r.log.Warn("shared subscription hand-offs not read", "groups", failed, "err", lastErr)
	}
	if again {
		signal(s.wake)
	}
}

// takeShared hands the messages of envs, from group's list, to the
// group's live members here, in order, and returns those from the first
// one no member took, with their fields in this replica's hash of owed
// messages. Every message is recorded as owed by this replica's members
// before any member gets it (redis_shareowed.go).
func (r *Redis) takeShared(ctx context.Context, group string, envs []string) (back []string, fields []string) {
	msgs := make([]*Message, 0, len(envs))
	kept := envs[:0:0]
	var owed []any
	for _, env := range envs {
		m := new(Message)
		if _, err := DecodeEnvelope(env, m); err != nil {
			r.stats.decodeErrors.Add(1)
			continue
		}
		msgs, kept = append(msgs, m), append(kept, env)
		if m.QoS > 0 {
			owed = append(owed, owedField(m, group), env)
		}
	}
	if len(owed) > 0 {
		if err := r.rdb.HSet(ctx, r.shareOwedKey(r.node), owed...).Err(); err != nil {
			r.log.Warn("handed-off shared messages not recorded as owed here", "group", group, "messages", len(owed)/2, "err", err)
		}
	}
	for k, m := range msgs {
		if !r.core.DeliverShared(group, m) {
			for _, m := range msgs[k:] {
				if m.QoS > 0 {
					fields = append(fields, owedField(m, group))
				}
			}
			return kept[k:], fields
		}
		r.stats.shareTakenOver.Add(1)
	}
	return nil, nil
}

// returnShared puts envs back at the head of group's list, in order, for
// the next look of any replica with members, and forgets fields, their
// records as owed here, first (see pushEnvs).
func (r *Redis) returnShared(ctx context.Context, group string, envs, fields []string) {
	if len(envs) == 0 {
		return
	}
	rev := make([]any, len(envs))
	for i, env := range envs {
		rev[len(envs)-1-i] = env // LPUSH puts the last pushed first
	}
	key := r.shareQueueKey(group)
	var push *redis.IntCmd
	_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(fields) > 0 {
			p.HDel(ctx, r.shareOwedKey(r.node), fields...)
		}
		push = p.LPush(ctx, key, rev...)
		p.PExpire(ctx, key, shareHandoffTTL)
		return nil
	})
	if err := push.Err(); err != nil {
		r.stats.shareLost.Add(int64(len(envs)))
		r.log.Warn("shared subscription hand-offs lost", "group", group, "messages", len(envs), "err", fmt.Errorf("give back: %w", err))
	}
}
