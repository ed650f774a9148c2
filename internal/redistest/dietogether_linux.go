package redistest

import (
	"os/exec"
	"syscall"
)

// DieWithTest makes the process cmd will start receive SIGKILL when the
// test process that started it dies, so that a test binary that crashes
// (and so never runs its cleanups) leaves no server running. Call it before
// cmd.Start.
func DieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
