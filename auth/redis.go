package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/packets"
)

// Users and their rules in Redis, in EMQX's layout, so that every replica
// reads the same ones and an operator (or EMQX tooling) can write them:
//
//	mqtt_user:<username>  hash  password_hash, salt, is_superuser
//	mqtt_acl:<username>   hash  topic filter → publish | subscribe | all
//
// password_hash is a mosquitto_passwd hash ("$7$…", or "$6$…"; its salt is
// inside it and the salt field is empty), or EMQX's salted SHA-256 as hex
// with the salt prefixed (salt_position = prefix). is_superuser "1" or
// "true" skips every ACL check. The ACL hash holds grants only, as EMQX's
// Redis authorizer does: a user with no rule matching is refused. "subscribe"
// grants subscribing and receiving, "publish" publishing. A filter may hold
// %u and %c (or EMQX's ${username} and ${clientid}), replaced by the
// client's user name and id.
const (
	userKeyPrefix = "mqtt_user:"
	aclKeyPrefix  = "mqtt_acl:"
)

// UserKey is the Redis key of username's record.
func UserKey(username string) string { return userKeyPrefix + username }

// ACLKey is the Redis key of username's ACL rules.
func ACLKey(username string) string { return aclKeyPrefix + username }

// UsersChannel is the Redis channel on which a change to users is
// announced, under the deployment's key prefix. A message is the user name
// whose record or rules changed, or "*" for every user.
func UsersChannel(prefix string) string { return prefix + "ctl:users" }

// How long a user read from Redis is trusted without a notice, in case one
// was lost; how many users a replica caches; how long one read may take;
// and how long after a failed read the next is not tried, so that a Redis
// outage costs deliveries no round trip each.
const (
	userCacheTTL     = time.Minute
	userCacheMax     = 10000
	userReadTimeout  = time.Second
	userReadBackoff  = time.Second
	listenRetryDelay = 100 * time.Millisecond
)

// ErrRedisUnavailable reports that a user could not be read from Redis.
var ErrRedisUnavailable = errors.New("users in Redis unavailable")

// RedisUsers is the Authorizer of users kept in Redis (see UserKey and
// ACLKey). Each replica reads a user once and keeps it until a notice on
// UsersChannel (which the user administration publishes after every
// change) or userCacheTTL says otherwise; a connected client is judged by
// its rules as they are when each packet arrives. When Redis cannot be
// read, CONNECT is answered 0x03 (server unavailable) and operations with
// no cached rules are refused. Safe for concurrent use.
type RedisUsers struct {
	rdb            redis.UniversalClient
	allowAnonymous bool
	log            *slog.Logger

	mu    sync.RWMutex
	gen   uint64 // bumped by every invalidation, so a read racing one is not kept
	cache map[string]*redisUser

	downUntil atomic.Int64 // unix nanos: reads fail fast until then

	pubsub *redis.PubSub
	cancel context.CancelFunc
	done   chan struct{}
}

// redisUser is one user as read from Redis.
type redisUser struct {
	exists    bool
	hash      passwordHash
	hashOK    bool // the stored hash decoded; a user with a bad one cannot log in
	superuser bool
	acl       *ACL // the rules as patterns, so %c and %u expand
	read      time.Time
}

// NewRedisUsers starts following users in rdb: it subscribes to
// UsersChannel(prefix) and returns once Redis confirmed the subscription,
// so that no change made afterwards goes unnoticed. Close stops it.
func NewRedisUsers(ctx context.Context, rdb redis.UniversalClient, prefix string, allowAnonymous bool, log *slog.Logger) (*RedisUsers, error) {
	ps := rdb.Subscribe(ctx, UsersChannel(prefix))
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe %s: %w", UsersChannel(prefix), err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	r := &RedisUsers{
		rdb: rdb, allowAnonymous: allowAnonymous, log: log,
		cache: make(map[string]*redisUser), pubsub: ps, cancel: cancel, done: make(chan struct{}),
	}
	go r.listen(lctx)
	return r, nil
}

// Close stops following notices. It does not close the Redis client.
func (r *RedisUsers) Close() error {
	r.cancel()
	err := r.pubsub.Close()
	<-r.done
	return err
}

// listen invalidates cached users as notices arrive. A subscription that
// was lost and made again may have missed notices, so it forgets them all.
func (r *RedisUsers) listen(ctx context.Context) {
	defer close(r.done)
	for {
		msg, err := r.pubsub.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// go-redis reconnects and subscribes again on the next call;
			// its confirmation below empties the cache.
			select {
			case <-ctx.Done():
				return
			case <-time.After(listenRetryDelay):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			r.invalidate("*")
		case *redis.Message:
			r.invalidate(m.Payload)
		}
	}
}

// invalidate forgets username, or every user for "*".
func (r *RedisUsers) invalidate(username string) {
	r.mu.Lock()
	r.gen++
	if username == "*" {
		clear(r.cache)
	} else {
		delete(r.cache, username)
	}
	r.mu.Unlock()
}

// user returns username's record: cached, or read from Redis.
func (r *RedisUsers) user(username string) (*redisUser, error) {
	r.mu.RLock()
	u, gen := r.cache[username], r.gen
	r.mu.RUnlock()
	if u != nil && time.Since(u.read) < userCacheTTL {
		return u, nil
	}
	if time.Now().UnixNano() < r.downUntil.Load() {
		return nil, ErrRedisUnavailable
	}
	ctx, cancel := context.WithTimeout(context.Background(), userReadTimeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	rec := pipe.HGetAll(ctx, UserKey(username))
	rules := pipe.HGetAll(ctx, ACLKey(username))
	if _, err := pipe.Exec(ctx); err != nil {
		// Logged here, at most about once per userReadBackoff: the
		// refusals it causes are logged, rate-limited, by the session.
		r.downUntil.Store(time.Now().Add(userReadBackoff).UnixNano())
		r.log.Warn("users in Redis unavailable: refusing connects and operations with no cached rules", "user", username, "retry_in", userReadBackoff, "err", err)
		return nil, fmt.Errorf("%w: read user %q: %w", ErrRedisUnavailable, username, err)
	}
	u = r.decode(username, rec.Val(), rules.Val())
	r.mu.Lock()
	if r.gen == gen {
		if len(r.cache) >= userCacheMax {
			clear(r.cache)
		}
		r.cache[username] = u
	}
	r.mu.Unlock()
	return u, nil
}

// decode builds a user from its two hashes. A stored hash or rule that does
// not decode is logged and grants nothing.
func (r *RedisUsers) decode(username string, rec, grants map[string]string) *redisUser {
	u := &redisUser{exists: len(rec) > 0, read: time.Now(), acl: &ACL{}}
	if !u.exists {
		return u
	}
	h, err := parseStoredHash(rec["password_hash"], rec["salt"])
	if err != nil {
		r.log.Warn("user in Redis cannot log in: bad password_hash", "user", username, "key", UserKey(username), "err", err)
	}
	u.hash, u.hashOK = h, err == nil
	u.superuser = rec["is_superuser"] == "1" || strings.EqualFold(rec["is_superuser"], "true")
	for topic, action := range grants {
		rl, err := parseRedisRule(topic, action)
		if err != nil {
			r.log.Warn("ACL rule in Redis ignored", "user", username, "key", ACLKey(username), "topic", topic, "err", err)
			continue
		}
		u.acl.patterns.add(rl)
	}
	return u
}

// redisActions maps EMQX's actions to the access they grant.
var redisActions = map[string]string{"publish": "write", "subscribe": "read", "all": "readwrite"}

// parseRedisRule reads one field of an ACL hash as a pattern line.
func parseRedisRule(topic, action string) (rule, error) {
	access, ok := redisActions[strings.ToLower(strings.TrimSpace(action))]
	if !ok {
		return rule{}, fmt.Errorf("%w: action %q (want publish, subscribe or all)", ErrSyntax, action)
	}
	topic = strings.NewReplacer("${username}", "%u", "${clientid}", "%c").Replace(topic)
	return parseRule(true, access+" "+topic)
}

// Authenticate implements the session's Authorizer as Authorizer does for
// a password file, with users read from Redis; 0x03 (server unavailable)
// when Redis cannot be read.
func (r *RedisUsers) Authenticate(usernameFlag bool, username string, passwordFlag bool, password []byte) packets.ReasonCode {
	if passwordFlag && !usernameFlag {
		return packets.RefusedBadUsernamePassword
	}
	if !usernameFlag || username == "" {
		if r.allowAnonymous {
			return packets.Accepted
		}
		return packets.RefusedNotAuthorized
	}
	u, err := r.user(username)
	if err != nil {
		return packets.RefusedServerUnavailable
	}
	known := u.exists && u.hashOK
	if !checkHash(u.hash, known, password) || !passwordFlag {
		return packets.RefusedBadUsernamePassword
	}
	return packets.Accepted
}

// rulesFor returns the ACL to judge username by, or nil to allow
// everything (a superuser); ok is false when nothing may be allowed: an
// anonymous client, a user that does not exist, or Redis unavailable.
func (r *RedisUsers) rulesFor(username string) (acl *ACL, ok bool) {
	if username == "" {
		return nil, false
	}
	u, err := r.user(username)
	if err != nil {
		return nil, false
	}
	if !u.exists {
		return nil, false
	}
	if u.superuser {
		return nil, true
	}
	return u.acl, true
}

// CanSubscribe reports whether the client may subscribe to filter.
func (r *RedisUsers) CanSubscribe(clientID, username, filter string) bool {
	acl, ok := r.rulesFor(username)
	return ok && (acl == nil || acl.CanSubscribe(clientID, username, filter))
}

// CanRead reports whether a message on topic may be delivered to the client.
func (r *RedisUsers) CanRead(clientID, username, topic string) bool {
	acl, ok := r.rulesFor(username)
	return ok && (acl == nil || acl.CanRead(clientID, username, topic))
}

// CanWrite reports whether the client may publish to topic.
func (r *RedisUsers) CanWrite(clientID, username, topic string) bool {
	acl, ok := r.rulesFor(username)
	return ok && (acl == nil || acl.CanWrite(clientID, username, topic))
}

// ChecksReads is true: any user's rules may change at any time.
func (r *RedisUsers) ChecksReads() bool { return true }
