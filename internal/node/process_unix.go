//go:build unix

package node

import (
	"errors"
	"syscall"
)

// processAlive reports whether pid is a running process this user may
// signal, i.e. one of ours (signal 0 checks without sending anything).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.EPERM)
}
