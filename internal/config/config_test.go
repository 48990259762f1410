package config

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeConf(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A list setting repeated in the file adds up, as a repeated flag does
// (before, every line after the first was dropped without a word); a flag
// or the environment still replaces the file's list as a whole.
func TestFileRepeatsListSettings(t *testing.T) {
	path := writeConf(t, "relays = wss://a.example\nrelays = wss://b.example, wss://c.example\n")
	for _, c := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{want: []string{"wss://a.example", "wss://b.example", "wss://c.example"}},
		{args: []string{"--relays", "wss://f.example"}, want: []string{"wss://f.example"}},
		{env: map[string]string{"T_RELAYS": "wss://e.example"}, want: []string{"wss://e.example"}},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var relays StringList
		fs.Var(&relays, "relays", "")
		src, err := Parse(fs, c.args)
		if err != nil {
			t.Fatal(err)
		}
		if err := ApplyEnv(fs, "T_", func(k string) string { return c.env[k] }, src); err != nil {
			t.Fatal(err)
		}
		if err := ApplyFile(fs, path, src); err != nil {
			t.Fatalf("%v %v: %v", c.args, c.env, err)
		}
		if !slices.Equal(relays, c.want) {
			t.Errorf("args %v env %v: relays %v, want %v", c.args, c.env, relays, c.want)
		}
	}
}

// Any other setting given twice in the file is an error naming both lines:
// before, the second line was ignored without a word.
func TestFileRefusesARepeatedSetting(t *testing.T) {
	path := writeConf(t, "# levels\nlevel = info\n\nlevel = debug\n")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	level := fs.String("level", "warn", "")
	src, err := Parse(fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = ApplyFile(fs, path, src)
	if err == nil || !strings.Contains(err.Error(), path+":4") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("level set twice: %v (level %q), want an error naming lines 4 and 2", err, *level)
	}
	// A flag beats the file: its lines are not read, repeated or not.
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	level = fs.String("level", "warn", "")
	if src, err = Parse(fs, []string{"--level", "error"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyFile(fs, path, src); err != nil || *level != "error" {
		t.Fatalf("a flag over a repeated file setting: %v, level %q", err, *level)
	}
}
