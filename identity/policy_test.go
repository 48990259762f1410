package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPassphrasePolicy(t *testing.T) {
	refused := []struct{ pass, reason string }{
		{"", "empty"},
		{"   ", "empty"},
		{"1234", "only digits"},
		{"000000", "only digits"},
		{"12345678901234567890", "only digits"},
		{"password", "common password"},
		{"Password123!", "common password"},
		{"PASSWORD", "common password"},
		{"iloveyou", "common password"},
		{"correct horse battery staple", "common password"},
		{"tr0ub4dor&3", "too short"},
		{"short", "too short"},
		{"abcdefghijklmnop", "sequence"},
		{"poiuytrewqpoiu", "sequence"},
		{"qwertyuiopasdf", "too predictable"},
		{"9876543210zyx", "too predictable"},
		{"abcabcabcabcabc", "repeated"},
		{"xyzzyxyzzyxyzzy", "repeated"},
		{"mypetaaaaaaacat", "identical characters"},
		{"passwordpassword", "common password"},
		{"dragonmonkeysunshine", "too predictable"},
	}
	for _, c := range refused {
		err := CheckPassphrase(c.pass)
		var pe *PolicyError
		if !errors.As(err, &pe) || !errors.Is(err, ErrWeakPassphrase) {
			t.Errorf("CheckPassphrase(%q) = %v, want a PolicyError", c.pass, err)
			continue
		}
		if !strings.Contains(pe.Reason, c.reason) {
			t.Errorf("CheckPassphrase(%q) reason %q, want it to mention %q", c.pass, pe.Reason, c.reason)
		}
		if len(c.pass) > 8 && strings.Contains(err.Error(), c.pass) {
			t.Errorf("error for %q repeats the passphrase", c.pass)
		}
	}
	accepted := []string{
		goodPass,
		"lantern quietly 9 sparrow fold",
		"Gx7#pQ2!mZ9&wL4",
		"vivid-orbit-pocket-tumble",
		"Über-sichere Passphrase 2024 mit Wörtern",
	}
	for _, p := range accepted {
		if err := CheckPassphrase(p); err != nil {
			t.Errorf("CheckPassphrase(%q) = %v, want nil (strength %.0f)", p, err, PassphraseStrength(p))
		}
	}
	if a, b := PassphraseStrength("aaaaaaaaaaaa"), PassphraseStrength("q8fj2mz0pl3x"); a >= b {
		t.Errorf("strength of repeats (%.0f) >= random (%.0f)", a, b)
	}
	if n := len(commonPasswords); n < 300 {
		t.Errorf("common password list has %d entries", n)
	}
}

func TestReadPassphraseSources(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "pass")
	if err := os.WriteFile(file, []byte(goodPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	withEnv := func(k string) (string, bool) {
		if k == DefaultPassphraseEnv {
			return "from env passphrase", true
		}
		return "", false
	}
	notTTY := func() bool { return false }

	p, src, err := ReadPassphrase(ctx, PassphraseOptions{File: file, LookupEnv: noEnv, IsTerminal: notTTY})
	if err != nil || p != goodPass || src != "file" {
		t.Fatalf("file: %q %q %v", p, src, err)
	}
	p, src, err = ReadPassphrase(ctx, PassphraseOptions{LookupEnv: withEnv, IsTerminal: notTTY})
	if err != nil || p != "from env passphrase" || src != "env" {
		t.Fatalf("env: %q %q %v", p, src, err)
	}
	if _, _, err := ReadPassphrase(ctx, PassphraseOptions{File: file, LookupEnv: withEnv}); err == nil || !strings.Contains(err.Error(), "use one") {
		t.Fatalf("file+env: %v", err)
	}
	if _, _, err := ReadPassphrase(ctx, PassphraseOptions{LookupEnv: noEnv, IsTerminal: notTTY}); !errors.Is(err, ErrNoPassphrase) || !strings.Contains(err.Error(), "--passphrase-file") {
		t.Fatalf("no source: %v", err)
	}
	if _, _, err := ReadPassphrase(ctx, PassphraseOptions{File: filepath.Join(dir, "missing"), LookupEnv: noEnv}); err == nil {
		t.Fatal("missing file accepted")
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, _, err := ReadPassphrase(ctx, PassphraseOptions{File: empty, LookupEnv: noEnv}); !errors.Is(err, ErrNoPassphrase) {
		t.Fatalf("empty file: %v", err)
	}
	// Line ends: one "\n", "\r\n" or "\r" goes (files written before
	// keep opening their keystores).
	// The longest passphrase with its line end is read whole; one byte
	// more is refused, not cut (a file of 4,096 bytes, CRLF and more was
	// read as its first 4,096).
	long := strings.Repeat("x", 4*MaxPassphraseLen)
	for content, want := range map[string]string{
		goodPass + "\r\n":       goodPass,
		goodPass + "\r":         goodPass,
		long + "\r\n":           long,
		long + "\n":             long,
		long + "\r\nmore":       "",
		long + "y":              "",
		goodPass + "\n\n":       goodPass + "\n",
		goodPass + "\nsecond\n": goodPass + "\nsecond",
	} {
		f := filepath.Join(dir, "ends")
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		p, _, err := ReadPassphrase(ctx, PassphraseOptions{File: f, LookupEnv: noEnv})
		switch {
		case want == "" && (err == nil || !strings.Contains(err.Error(), "too large")):
			t.Errorf("%d bytes ending %q: %v, want too large", len(content), content[max(0, len(content)-6):], err)
		case want != "" && (err != nil || p != want):
			t.Errorf("%d bytes ending %q: %d bytes ending %q, %v", len(content), content[max(0, len(content)-6):], len(p), p[max(0, len(p)-6):], err)
		}
	}
	// Prompt path with an injected reader, with confirmation.
	answers := []string{"typed passphrase", "typed passphrase"}
	read := func(context.Context) (string, error) { a := answers[0]; answers = answers[1:]; return a, nil }
	var out strings.Builder
	p, src, err = ReadPassphrase(ctx, PassphraseOptions{LookupEnv: noEnv, IsTerminal: func() bool { return true },
		ReadSecret: read, Confirm: true, Out: &out})
	if err != nil || p != "typed passphrase" || src != "prompt" {
		t.Fatalf("prompt: %q %q %v", p, src, err)
	}
	if strings.Contains(out.String(), "typed passphrase") {
		t.Fatal("prompt echoed the passphrase")
	}
	answers = []string{"one", "two"}
	if _, _, err := ReadPassphrase(ctx, PassphraseOptions{LookupEnv: noEnv, IsTerminal: func() bool { return true },
		ReadSecret: read, Confirm: true, Out: &out}); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("mismatch: %v", err)
	}
}
