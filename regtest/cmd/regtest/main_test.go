package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// asMain makes the test binary run main() (with the arguments after "--").
const asMain = "ANCHORCHAT_REGTEST_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) != "" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{os.Args[0]}, os.Args[i+1:]...)
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBuildStopsGoAtSIGTERM: `regtest build` stopped by SIGTERM (a
// supervisor, timeout(1)) stops the go command it runs, rather than dying
// and leaving a build of lnd running for minutes.
func TestBuildStopsGoAtSIGTERM(t *testing.T) {
	bin := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "go.pid")
	fakeGo := "#!/bin/sh\necho $$ > " + pidFile + ".tmp && mv " + pidFile + ".tmp " + pidFile + "\nexec sleep 600\n"
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$", "--", "build")
	cmd.Env = append(os.Environ(), asMain+"=1", "PATH="+bin+":"+os.Getenv("PATH"), "ANCHORCHAT_CACHE="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var goPID int
	for goPID == 0 {
		b, err := os.ReadFile(pidFile)
		if err == nil {
			goPID, _ = strconv.Atoi(string(bytes.TrimSpace(b)))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("regtest build: %v\n%s", cmd.ProcessState, out.String())
	// main returns only after the go command it ran has been reaped.
	if err := syscall.Kill(goPID, 0); err == nil {
		_ = syscall.Kill(goPID, syscall.SIGKILL)
		t.Fatalf("the go command (pid %d) still runs after regtest build got SIGTERM", goPID)
	}
}
