package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	for _, name := range []string{"hard links", "no hard links"} {
		t.Run(name, func(t *testing.T) {
			if name == "no hard links" {
				link = func(string, string) error { return &os.LinkError{Op: "link", Err: syscall.EPERM} }
				t.Cleanup(func() { link = os.Link })
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "seed.json")
			if err := Write(path, []byte("first"), false); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v, %v", st.Mode(), err)
			}
			// A new file never goes over an existing one.
			if err := Write(path, []byte("second"), false); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("second new file: %v, want ErrExist", err)
			}
			if b, _ := os.ReadFile(path); string(b) != "first" {
				t.Fatalf("the file now holds %q", b)
			}
			// Replacing does.
			if err := Write(path, []byte("third"), true); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(path); string(b) != "third" {
				t.Fatalf("after replace: %q", b)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".seed.json.tmp-*")); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}
