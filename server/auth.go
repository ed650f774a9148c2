package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/bridgemq/server/auth"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/session"
)

// loadAuth reads the password and ACL files; errors name the flag.
func loadAuth(cfg *Config) (*auth.Authorizer, error) {
	a := &auth.Authorizer{AllowAnonymous: cfg.AllowAnonymous}
	if cfg.PasswordFile != "" {
		p, err := auth.LoadPasswordFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("-password-file: %w", err)
		}
		a.Passwords = p
	}
	if cfg.ACLFile != "" {
		acl, err := auth.LoadACLFile(cfg.ACLFile)
		if err != nil {
			return nil, fmt.Errorf("-acl-file: %w", err)
		}
		a.ACL = acl
	}
	return a, nil
}

// newRedisAuth follows the users and ACL kept in Redis (-auth-redis) on a
// client of its own, so that its subscription does not share the bridge's
// connections. The function returned stops it and closes that client.
func newRedisAuth(ctx context.Context, cfg *Config, log *slog.Logger) (*auth.RedisUsers, func() error, error) {
	rdb, err := cfg.RedisClient()
	if err != nil {
		return nil, nil, err
	}
	u, err := auth.NewRedisUsers(ctx, rdb, cfg.RedisPrefix, cfg.AllowAnonymous, log.With("component", "auth-redis"))
	if err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("-auth-redis: %s: %w", cfg.redisSource(), err)
	}
	log.Info("users and ACL read from Redis", "channel", auth.UsersChannel(cfg.RedisPrefix))
	return u, func() error { return errors.Join(u.Close(), rdb.Close()) }, nil
}

// liveAuth is the session.Authorizer every session holds. Sessions ask it
// on each CONNECT, SUBSCRIBE, PUBLISH and delivery, and it hands each
// question to the authorizer in force at that moment, so a reload that
// swaps that authorizer judges every connected client's next packet by the
// new rules without touching its connection.
type liveAuth struct {
	cur atomic.Pointer[session.Authorizer]
}

func newLiveAuth(a session.Authorizer) *liveAuth {
	l := &liveAuth{}
	l.swap(a)
	return l
}

// swap puts a in force.
func (l *liveAuth) swap(a session.Authorizer) { l.cur.Store(&a) }

func (l *liveAuth) now() session.Authorizer { return *l.cur.Load() }

// Authenticate implements session.Authorizer.
func (l *liveAuth) Authenticate(usernameFlag bool, username string, passwordFlag bool, password []byte) packets.ReasonCode {
	return l.now().Authenticate(usernameFlag, username, passwordFlag, password)
}

// CanSubscribe implements session.Authorizer.
func (l *liveAuth) CanSubscribe(clientID, username, filter string) bool {
	return l.now().CanSubscribe(clientID, username, filter)
}

// CanRead implements session.Authorizer.
func (l *liveAuth) CanRead(clientID, username, topic string) bool {
	return l.now().CanRead(clientID, username, topic)
}

// CanWrite implements session.Authorizer.
func (l *liveAuth) CanWrite(clientID, username, topic string) bool {
	return l.now().CanWrite(clientID, username, topic)
}

// ChecksReads implements session.Authorizer.
func (l *liveAuth) ChecksReads() bool { return l.now().ChecksReads() }

// reloadAuth re-reads -password-file and -acl-file and puts them in force.
// A file that does not load keeps the rules in force (both files: they
// are swapped together or not at all) and the error says why.
func (s *Server) reloadAuth() error {
	if s.auth == nil || (s.cfg.PasswordFile == "" && s.cfg.ACLFile == "") {
		return nil
	}
	a, err := loadAuth(s.cfg)
	if err != nil {
		s.log.Warn("password and ACL files not reloaded: keeping the rules in force", "err", err)
		return fmt.Errorf("reload: %w", err)
	}
	s.auth.swap(a)
	s.log.Info("password and ACL files reloaded", "password_file", s.cfg.PasswordFile, "users", a.Passwords.Len(), "acl_file", s.cfg.ACLFile)
	return nil
}

// Reload re-reads the files an operator may change while the server runs
// (main calls it on SIGHUP): -password-file and -acl-file, and the TLS
// certificate, key and client CA. Connections stay up. Each set of files
// that does not load keeps the one in force; the error says why, and the
// others are still reloaded.
func (s *Server) Reload() error {
	return errors.Join(s.reloadAuth(), s.reloadCertificates())
}
