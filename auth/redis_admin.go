package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Errors of the user administration.
var (
	// ErrUserExists reports an AddUser for a user already in Redis.
	ErrUserExists = errors.New("user already exists")
	// ErrNoSuchUser reports a change to a user not in Redis.
	ErrNoSuchUser = errors.New("no such user")
)

// UserAdmin adds, changes and removes the users in Redis that RedisUsers
// reads, and announces each change on UsersChannel so that every replica
// applies it at once.
type UserAdmin struct {
	RDB    redis.UniversalClient
	Prefix string // the replicas' -redis-prefix, which names the channel
}

// AddUser stores a new user with password hashed as mosquitto_passwd does.
func (a *UserAdmin) AddUser(ctx context.Context, username, password string, superuser bool) error {
	if err := checkUsername(username); err != nil {
		return err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	// HSETNX claims the record, so that two concurrent adds cannot both win.
	created, err := a.RDB.HSetNX(ctx, UserKey(username), "password_hash", hash).Result()
	if err != nil {
		return fmt.Errorf("add user %q: %w", username, err)
	}
	if !created {
		return fmt.Errorf("add user %q: %w", username, ErrUserExists)
	}
	if err := a.RDB.HSet(ctx, UserKey(username), "salt", "", "is_superuser", superuserField(superuser)).Err(); err != nil {
		return fmt.Errorf("add user %q: %w", username, err)
	}
	return a.announce(ctx, username)
}

// SetPassword replaces an existing user's password.
func (a *UserAdmin) SetPassword(ctx context.Context, username, password string) error {
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	if err := a.mustExist(ctx, username); err != nil {
		return err
	}
	if err := a.RDB.HSet(ctx, UserKey(username), "password_hash", hash, "salt", "").Err(); err != nil {
		return fmt.Errorf("set password of %q: %w", username, err)
	}
	return a.announce(ctx, username)
}

// SetSuperuser sets or clears an existing user's superuser flag.
func (a *UserAdmin) SetSuperuser(ctx context.Context, username string, superuser bool) error {
	if err := a.mustExist(ctx, username); err != nil {
		return err
	}
	if err := a.RDB.HSet(ctx, UserKey(username), "is_superuser", superuserField(superuser)).Err(); err != nil {
		return fmt.Errorf("set superuser of %q: %w", username, err)
	}
	return a.announce(ctx, username)
}

// DeleteUser removes a user and its rules. Its open connections stay, but
// every packet they send from now on is refused by the ACL.
func (a *UserAdmin) DeleteUser(ctx context.Context, username string) error {
	// One key per command: in Redis Cluster the two keys live in
	// different slots.
	n, err := a.RDB.Del(ctx, UserKey(username)).Result()
	if err != nil {
		return fmt.Errorf("delete user %q: %w", username, err)
	}
	if err := a.RDB.Del(ctx, ACLKey(username)).Err(); err != nil {
		return fmt.Errorf("delete rules of %q: %w", username, err)
	}
	if err := a.announce(ctx, username); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("delete user %q: %w", username, ErrNoSuchUser)
	}
	return nil
}

// SetRule grants username action (publish, subscribe or all) on filter,
// replacing what that filter granted; action "none" removes the filter's
// rule.
func (a *UserAdmin) SetRule(ctx context.Context, username, filter, action string) error {
	if strings.EqualFold(action, "none") {
		if err := a.RDB.HDel(ctx, ACLKey(username), filter).Err(); err != nil {
			return fmt.Errorf("remove rule %q of %q: %w", filter, username, err)
		}
		return a.announce(ctx, username)
	}
	if _, err := parseRedisRule(filter, action); err != nil {
		return fmt.Errorf("rule %q %q: %w", filter, action, err)
	}
	if err := a.RDB.HSet(ctx, ACLKey(username), filter, strings.ToLower(action)).Err(); err != nil {
		return fmt.Errorf("set rule %q of %q: %w", filter, username, err)
	}
	return a.announce(ctx, username)
}

// Rules returns username's rules: filter → action.
func (a *UserAdmin) Rules(ctx context.Context, username string) (map[string]string, error) {
	m, err := a.RDB.HGetAll(ctx, ACLKey(username)).Result()
	if err != nil {
		return nil, fmt.Errorf("read rules of %q: %w", username, err)
	}
	return m, nil
}

func (a *UserAdmin) mustExist(ctx context.Context, username string) error {
	n, err := a.RDB.Exists(ctx, UserKey(username)).Result()
	if err != nil {
		return fmt.Errorf("read user %q: %w", username, err)
	}
	if n == 0 {
		return fmt.Errorf("user %q: %w", username, ErrNoSuchUser)
	}
	return nil
}

// announce tells every replica that username changed.
func (a *UserAdmin) announce(ctx context.Context, username string) error {
	if err := a.RDB.Publish(ctx, UsersChannel(a.Prefix), username).Err(); err != nil {
		return fmt.Errorf("announce the change of %q on %s (replicas see it within %s): %w", username, UsersChannel(a.Prefix), userCacheTTL, err)
	}
	return nil
}

func superuserField(on bool) string {
	if on {
		return "1"
	}
	return "0"
}

// checkUsername refuses names a client could not send or that would widen
// an ACL pattern (Mosquitto refuses those clients too).
func checkUsername(name string) error {
	switch {
	case name == "" || name == "*":
		return fmt.Errorf("%w: user name %q", ErrSyntax, name)
	case strings.ContainsAny(name, "+#"):
		return fmt.Errorf("%w: user name %q holds + or #, which ACL patterns refuse", ErrSyntax, name)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: user name holds a NUL byte", ErrSyntax)
	}
	return nil
}
