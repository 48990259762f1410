package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process the harness started (cmd != nil) or one known only
// by PID from a state file.
type proc struct {
	name    string
	pid     int
	binary  string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the started process has been reaped
	logFrom int64         // the log's size when the process started
}

// startProc starts bin with its output appended to logPath, in its own
// session (so a terminal's Ctrl-C reaches only the harness, which stops the
// children in order, and `up --detach` leaves them running).
func startProc(name, bin string, args []string, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("regtest: %s log: %w", name, err)
	}
	var logFrom int64
	if fi, err := lf.Stat(); err == nil {
		logFrom = fi.Size()
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("regtest: start %s: %w", name, err)
	}
	lf.Close() // the child holds its own descriptor
	p := &proc{name: name, pid: cmd.Process.Pid, binary: bin, logPath: logPath, cmd: cmd, exited: make(chan struct{}), logFrom: logFrom}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// bindFailed reports whether the process has exited and its log since it
// started says a port was taken: it is worth starting again on others.
func (p *proc) bindFailed() bool {
	if p == nil || p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
	default:
		return false
	}
	f, err := os.Open(p.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, p.logFrom, 1<<30))
	return err == nil && bytes.Contains(b, []byte("address already in use"))
}

// pidAlive reports whether pid is a live (not zombie) process whose argv[0]
// is binary (when binary is set: guards against PID reuse).
func pidAlive(pid int, binary string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// pid (comm) S ...: the state follows the last ')'.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			return false
		}
	} else if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if binary == "" {
		return true
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) // no procfs: trust kill(0)
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	return argv0 == binary
}

// stopPID sends SIGTERM, waits up to grace for the process to go, then
// SIGKILLs it and waits again.
func stopPID(ctx context.Context, pid int, binary string, grace time.Duration) error {
	if !pidAlive(pid, binary) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("regtest: SIGTERM %d: %w", pid, err)
	}
	if waitGone(ctx, pid, binary, grace) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("regtest: SIGKILL %d: %w", pid, err)
	}
	if waitGone(ctx, pid, binary, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("regtest: process %d (%s) did not exit", pid, binary)
}

func waitGone(ctx context.Context, pid int, binary string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !pidAlive(pid, binary) {
			return true
		}
		select {
		case <-ctx.Done():
			return !pidAlive(pid, binary)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return !pidAlive(pid, binary)
}

// logTail returns the last n lines of a file.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
