//go:build !linux

package redistest

import "os/exec"

// DieWithTest does nothing where the parent-death signal does not exist;
// the test cleanups stop the servers.
func DieWithTest(*exec.Cmd) {}
