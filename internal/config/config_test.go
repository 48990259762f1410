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

// A value that does not parse is named, with what the setting takes,
// wherever it came from (it was "parse error" alone).
func TestBadValuesSayWhatTheSettingTakes(t *testing.T) {
	newSet := func() *flag.FlagSet {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.Int("max", 1, "")
		fs.Bool("open", false, "")
		fs.Duration("every", 0, "")
		fs.Float64("rate", 0, "")
		return fs
	}
	for _, c := range []struct{ name, val, want string }{
		{"max", "lots", "a whole number"},
		{"open", "yes", "true or false"},
		{"every", "10", "a duration"},
		{"rate", "fast", "a number"},
	} {
		fs := newSet()
		env := map[string]string{"T_" + strings.ToUpper(c.name): c.val}
		err := ApplyEnv(fs, "T_", func(k string) string { return env[k] }, Source{})
		if err == nil || !strings.Contains(err.Error(), "T_"+strings.ToUpper(c.name)) || !strings.Contains(err.Error(), `"`+c.val+`"`) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("environment %s=%s: %v, want the variable, the value and %q", c.name, c.val, err, c.want)
		}
		path := writeConf(t, "\n"+c.name+" = "+c.val+"\n")
		err = ApplyFile(newSet(), path, Source{})
		if err == nil || !strings.Contains(err.Error(), path+":2") || !strings.Contains(err.Error(), `"`+c.val+`"`) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("file %s = %s: %v, want the line, the value and %q", c.name, c.val, err, c.want)
		}
	}
}

// A value in double quotes loses that one pair of quotes; any other quote
// is part of the value. Every quote at either end used to be stripped, one
// by one and unpaired: a password ending in " lost it, `say "hi"` became
// `say "hi`.
func TestFileQuotes(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{`v = plain`, `plain`},
		{`v = "quoted"`, `quoted`},
		{`v = "  spaced "`, `  spaced `},
		{`v = ""`, ``},
		{`v = say "hi"`, `say "hi"`},
		{`v = pass"`, `pass"`},
		{`v = "pass`, `"pass`},
		{`v = ""twice""`, `"twice"`},
		{`v = "`, `"`},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		v := fs.String("v", "default", "")
		if err := ApplyFile(fs, writeConf(t, c.line+"\n"), Source{}); err != nil {
			t.Fatalf("%s: %v", c.line, err)
		}
		if *v != c.want {
			t.Errorf("%s: value %q, want %q", c.line, *v, c.want)
		}
	}
}
