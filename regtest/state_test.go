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
