package regtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestStopStateSparesAReusedSupervisorPID: the state file of a foreground
// up that died (killed, the machine rebooted) names its PID; once that PID
// belongs to another program, the network is not running and down must not
// signal it, as it does not signal a reused PID of btcd, LND or a node.
func TestStopStateSparesAReusedSupervisorPID(t *testing.T) {
	other := exec.Command("sleep", "600") // the program now holding the PID
	other.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = other.Wait(); close(exited) }()
	t.Cleanup(func() { _ = other.Process.Kill(); <-exited })

	dir := t.TempDir()
	js := fmt.Sprintf(`{"version":1,"dir":%q,"supervisor_pid":%d,"supervisor_binary":"/gone/anchorchat",
		"btcd":{"pid":0,"binary":"/gone/btcd"}}`, dir, other.Process.Pid)
	if err := os.WriteFile(StatePath(dir), []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.AnyAlive() {
		t.Fatalf("a state whose supervisor PID runs another program counts as live: %+v", st.Processes())
	}
	if err := StopState(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatalf("StopState signalled pid %d, which runs sleep, not the recorded supervisor", other.Process.Pid)
	default:
	}

	// What up records for itself matches a live supervisor.
	if !pidAlive(os.Getpid(), supervisorBinary()) {
		t.Fatalf("pidAlive(own pid, %q) = false", supervisorBinary())
	}
}

// TestWriteStateIsPrivate: the state file names the macaroon and TLS paths
// and holds the RPC and wallet passwords: it is 0600 whatever a leftover
// temp file's mode (WriteFile keeps an existing file's mode, and the rename
// gave state.json that mode).
func TestWriteStateIsPrivate(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(StatePath(dir)+".tmp", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(StatePath(dir)+".tmp", 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := writeState(&State{Version: 1, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(StatePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if st, err := ReadState(dir); err != nil || st.Version != 1 {
		t.Fatalf("read back: %+v %v", st, err)
	}
}
