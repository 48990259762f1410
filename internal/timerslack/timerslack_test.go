//go:build linux && cgo

package timerslack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "TIMERSLACK_TEST_CHILD"

// TestMain turns the test binary into the child the tests start with
// different environments: it prints its Status, the slack of every one of
// its threads as the kernel reports them ("unreadable" where reading another
// thread's needs CAP_SYS_NICE), and the slacks that goroutines on fresh
// threads read for themselves.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		os.Exit(m.Run())
	}
	slack, how, err := Status()
	threads := "unreadable"
	tasks, _ := filepath.Glob("/proc/self/task/*")
	var seen []string
	for _, f := range tasks {
		// /proc/<tid>/timerslack_ns is that thread's (there is no such file
		// under /proc/self/task/<tid>/).
		b, rerr := os.ReadFile(filepath.Join("/proc", filepath.Base(f), "timerslack_ns"))
		if errors.Is(rerr, fs.ErrPermission) {
			seen = nil
			break
		}
		if rerr != nil {
			fmt.Println("read:", rerr)
			os.Exit(1)
		}
		seen = append(seen, strings.TrimSpace(string(b)))
	}
	if seen != nil {
		threads = distinct(seen)
	}
	own := make(chan string, 8)
	for range 8 {
		go func() {
			runtime.LockOSThread() // and never unlocked: the thread exits with the goroutine
			own <- strconv.FormatInt(int64(getSlack()), 10)
			time.Sleep(50 * time.Millisecond) // keep this thread while the others start
		}()
	}
	var mine []string
	for range 8 {
		mine = append(mine, <-own)
	}
	fmt.Printf("%d\n%s\n%v\n%s\n%s\n", slack, how, err, threads, distinct(mine))
	os.Exit(0)
}

func distinct(s []string) string {
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

func getSlack() time.Duration {
	ns, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, 30 /* PR_GET_TIMERSLACK */, 0, 0)
	return time.Duration(ns)
}

type childStatus struct {
	slack   time.Duration
	how     string
	err     string
	threads string // the distinct slacks of its threads, or "unreadable"
	own     string // the distinct slacks its goroutines read on their threads
}

// parentSlack is what children inherit: child starts them from a thread
// whose slack is set to this, unlike this test binary's default, so that a
// child that wrongly set its own default is caught.
const parentSlack = 123 * time.Microsecond

func child(t *testing.T, env string, set bool) childStatus {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, Env+"=") }), childEnv+"=1")
	if set {
		cmd.Env = append(cmd.Env, Env+"="+env)
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result)
	go func() {
		// A fork copies the slack of the thread that forks. This thread
		// keeps parentSlack and ends with the goroutine, never unlocked.
		runtime.LockOSThread()
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, 29 /* PR_SET_TIMERSLACK */, uintptr(parentSlack), 0); e != 0 {
			done <- result{nil, e}
			return
		}
		out, err := cmd.Output()
		done <- result{out, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("child: %v\n%s", r.err, r.out)
	}
	lines := strings.Split(strings.TrimSpace(string(r.out)), "\n")
	if len(lines) != 5 {
		t.Fatalf("child printed %q", r.out)
	}
	ns, err := strconv.ParseInt(lines[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return childStatus{time.Duration(ns), lines[1], lines[2], lines[3], lines[4]}
}

// allAt checks that every thread the child could see has slack d.
func allAt(t *testing.T, what string, got childStatus, d time.Duration) {
	t.Helper()
	want := strconv.FormatInt(int64(d), 10)
	if got.own != want {
		t.Errorf("%s: goroutines on fresh threads read %s, want %s", what, got.own, want)
	}
	if got.threads != "unreadable" && got.threads != want {
		t.Errorf("%s: threads' slacks %s, want all %s", what, got.threads, want)
	}
}

func TestSlack(t *testing.T) {
	def := child(t, "", false)
	if def.slack != Default || !strings.Contains(def.how, "default") || def.err != "<nil>" {
		t.Fatalf("without %s: %+v, want %v by default", Env, def, Default)
	}
	// Every thread has it, the runtime's monitor among them (where the
	// kernel lets a non-root user read them): they were all created after
	// the constructor ran.
	allAt(t, "default", def, Default)

	for env, want := range map[string]time.Duration{
		"2ms":     2 * time.Millisecond,
		"750us":   750 * time.Microsecond,
		"300µs":   300 * time.Microsecond,
		"300μs":   300 * time.Microsecond, // Greek mu
		"80000ns": 80 * time.Microsecond,
	} {
		got := child(t, env, true)
		if got.slack != want || !strings.Contains(got.how, Env) || got.err != "<nil>" {
			t.Errorf("%s=%s: %+v, want %v", Env, env, got, want)
		}
		allAt(t, env, got, want)
	}

	for _, zero := range []string{"0", "0us"} {
		got := child(t, zero, true)
		if got.slack != parentSlack || !strings.Contains(got.how, "inherited") || got.err != "<nil>" {
			t.Errorf("%s=%s: %+v, want the inherited %v", Env, zero, got, parentSlack)
		}
		allAt(t, zero, got, parentSlack)
	}

	for _, bad := range []string{"500", "abc", "2s", "5000ms", "-1ms", "1.5ms", "10 ms", "99999999999999999999999ns"} {
		got := child(t, bad, true)
		if got.slack != parentSlack || !strings.Contains(got.err, Env) {
			t.Errorf("%s=%s: %+v, want an error and the inherited %v", Env, bad, got, parentSlack)
		}
	}
}
