package server

import (
	"fmt"

	"github.com/bridgemq/server/auth"
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
