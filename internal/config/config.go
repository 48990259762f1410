// Package config fills a flag.FlagSet from three sources, in order of
// precedence: command-line flags, then environment variables, then a config
// file, then the flags' defaults. One set of flag definitions therefore
// documents every setting, whatever its source.
//
// The file format is lines of `name = value` (the flag's name without
// dashes), with `#` or `;` starting a comment line. A value may be put in
// double quotes, which keep the spaces at its ends; one pair is removed,
// any other quote is part of the value. A list setting
// (StringList) may be repeated, its values adding up as a repeated flag's
// do; any other setting may appear once. Environment variables are
// the flag name upper-cased with dashes and dots turned into underscores,
// behind a prefix: --relay.max-limit is ANCHORCHAT_RELAY_MAX_LIMIT.
package config

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Source records where each flag's value came from.
type Source map[string]string

// EnvName is the environment variable for a flag.
func EnvName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// ApplyEnv sets every flag not already in src from the environment.
func ApplyEnv(fset *flag.FlagSet, prefix string, getenv func(string) string, src Source) error {
	var err error
	fset.VisitAll(func(f *flag.Flag) {
		if err != nil || src[f.Name] != "" {
			return
		}
		name := EnvName(prefix, f.Name)
		if v := getenv(name); v != "" {
			if e := fset.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s=%q: %w", name, v, badValue(f, e))
				return
			}
			src[f.Name] = "env"
		}
	})
	return err
}

// ApplyFile sets every flag not already in src from the config file at path.
// A missing file is not an error; an unknown key or a bad value is, with its line.
func ApplyFile(fset *flag.FlagSet, path string, src Source) error {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	first := map[string]int{} // the line each setting was first set on
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: expected `name = value`", path, n)
		}
		key, val = strings.TrimSpace(key), unquote(strings.TrimSpace(val))
		if fset.Lookup(key) == nil {
			return fmt.Errorf("%s:%d: unknown setting %q (see --help)", path, n, key)
		}
		if src[key] != "" && src[key] != "file" {
			continue // a flag or the environment set it
		}
		if line, again := first[key]; again {
			if _, list := fset.Lookup(key).Value.(*StringList); !list {
				return fmt.Errorf("%s:%d: %s is set again (first on line %d): set it once", path, n, key, line)
			}
		} else {
			first[key] = n
		}
		if err := fset.Set(key, val); err != nil {
			return fmt.Errorf("%s:%d: %s = %q: %w", path, n, key, val, badValue(fset.Lookup(key), err))
		}
		src[key] = "file"
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// unquote removes one pair of double quotes around v; any other quote,
// such as the last character of a password, is part of the value.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// badValue says what a flag takes, for a value its Set refused: the
// flag package's own error for its basic types is only "parse error" (or
// the strconv error); a flag of another type explains itself.
func badValue(f *flag.Flag, err error) error {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return fmt.Errorf("%s takes true or false", f.Name)
	}
	switch typ, _ := flag.UnquoteUsage(f); typ {
	case "int", "uint":
		return fmt.Errorf("%s takes a whole number", f.Name)
	case "float":
		return fmt.Errorf("%s takes a number", f.Name)
	case "duration":
		return fmt.Errorf("%s takes a duration with its unit, such as 30s, 10m or 1h", f.Name)
	}
	return err
}

// Parse parses args into fset and records them as the "flag" source.
func Parse(fset *flag.FlagSet, args []string) (Source, error) {
	if err := fset.Parse(args); err != nil {
		return nil, err
	}
	src := Source{}
	fset.Visit(func(f *flag.Flag) { src[f.Name] = "flag" })
	return src, nil
}

// StringList is a flag holding a comma-separated list; repeating the flag appends.
type StringList []string

func (s *StringList) String() string { return strings.Join(*s, ",") }

// Set appends the comma-separated values in v.
func (s *StringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}
