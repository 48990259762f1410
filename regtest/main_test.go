package regtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeEnv makes the test binary, run through a link named like the real
// one (fakeBinary), play a child process that hangs or fails at start.
const fakeEnv = "ANCHORCHAT_REGTEST_FAKE_PROCESS"

func TestMain(m *testing.M) {
	switch os.Getenv(fakeEnv) {
	case "hang":
		fmt.Println("fake process: up, never answering")
		time.Sleep(time.Hour)
		os.Exit(0)
	case "exit":
		fmt.Println("fake process: boom")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// fakeBinary links the test binary as dir/name, to run with fakeEnv set to
// mode; its argv[0] is then that path, as a real btcd's is its binary's.
func fakeBinary(t *testing.T, name, mode string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(exe, p); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeEnv, mode)
	return p
}
