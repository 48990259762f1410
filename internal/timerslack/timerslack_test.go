//go:build linux && cgo

package timerslack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const childEnv = "TIMERSLACK_TEST_CHILD"

// TestMain turns the test binary into the child the tests start with
// different environments: it prints its Status and the slack of every one
// of its threads, as the kernel reports them.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		os.Exit(m.Run())
	}
	slack, how, err := Status()
	// /proc/<tid>/timerslack_ns is that thread's (there is no such file
	// under /proc/self/task/<tid>/).
	tasks, _ := filepath.Glob("/proc/self/task/*")
	var threads []string
	for _, f := range tasks {
		b, rerr := os.ReadFile(filepath.Join("/proc", filepath.Base(f), "timerslack_ns"))
		if rerr != nil {
			fmt.Println("read:", rerr)
			os.Exit(1)
		}
		threads = append(threads, strings.TrimSpace(string(b)))
	}
	slices.Sort(threads)
	fmt.Printf("%d\n%s\n%v\n%s\n", slack, how, err, strings.Join(slices.Compact(threads), ","))
	os.Exit(0)
}

type childStatus struct {
	slack   time.Duration
	how     string
	err     string
	threads string // the distinct slacks of its threads
}

func child(t *testing.T, env string, set bool) childStatus {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, Env+"=") }), childEnv+"=1")
	if set {
		cmd.Env = append(cmd.Env, Env+"="+env)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 {
		t.Fatalf("child printed %q", out)
	}
	ns, err := strconv.ParseInt(lines[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return childStatus{time.Duration(ns), lines[1], lines[2], lines[3]}
}

func TestSlack(t *testing.T) {
	parent, _, _ := Status() // what a child inherits

	def := child(t, "", false)
	if def.slack != Default || !strings.Contains(def.how, "default") || def.err != "<nil>" {
		t.Fatalf("without %s: %+v, want %v by default", Env, def, Default)
	}
	// Every thread has it, the runtime's monitor among them: they were all
	// created after the constructor ran.
	if def.threads != strconv.FormatInt(int64(Default), 10) {
		t.Fatalf("threads' slacks %s, want all %d", def.threads, Default)
	}

	for env, want := range map[string]time.Duration{
		"2ms":     2 * time.Millisecond,
		"750us":   750 * time.Microsecond,
		"300µs":   300 * time.Microsecond,
		"80000ns": 80 * time.Microsecond,
	} {
		got := child(t, env, true)
		if got.slack != want || !strings.Contains(got.how, Env) || got.err != "<nil>" {
			t.Errorf("%s=%s: %+v, want %v", Env, env, got, want)
		}
		if got.threads != strconv.FormatInt(int64(want), 10) {
			t.Errorf("%s=%s: threads' slacks %s", Env, env, got.threads)
		}
	}

	if got := child(t, "0", true); got.slack != parent || !strings.Contains(got.how, "inherited") || got.err != "<nil>" {
		t.Errorf("%s=0: %+v, want the inherited %v", Env, got, parent)
	}

	for _, bad := range []string{"500", "abc", "2s", "5000ms", "-1ms", "1.5ms", "10 ms"} {
		got := child(t, bad, true)
		if got.slack != parent || !strings.Contains(got.err, Env) {
			t.Errorf("%s=%s: %+v, want an error and the inherited %v", Env, bad, got, parent)
		}
	}
}
