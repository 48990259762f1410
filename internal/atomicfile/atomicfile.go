// Package atomicfile writes the node's small secret files (the identity
// keystore, the wallet seed) so that a crash never leaves a partial file
// under the final name, and a new file never replaces an existing one.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// link is os.Link; a test replaces it to play a filesystem without hard
// links.
var link = os.Link

// Write writes data to path with mode 0600. It writes a temp file in the
// same directory, fsyncs it, and renames it over path (replace) or links
// it to path (!replace), which fails with an error wrapping fs.ErrExist
// if path exists; then it fsyncs the directory, so the name survives a
// crash. On a filesystem without hard links (exFAT, some FUSE mounts) a
// new file is instead created in place with O_EXCL: still never over an
// existing one, but a crash during its write can leave it partial.
func Write(path string, data []byte, replace bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
		}
		_ = os.Remove(tmpName) // after a link, or on failure; nothing after a rename
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod temp file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write temp file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync temp file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		tmp = nil
		return fmt.Errorf("close temp file: %w", err)
	}
	tmp = nil
	switch {
	case replace:
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("replace %s: %w", path, err)
		}
	default:
		if err := link(tmpName, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", path, fs.ErrExist)
			}
			if err := writeExclusive(path, data); err != nil {
				return err
			}
		}
	}
	return syncDir(dir)
}

// writeExclusive creates path, which must not exist, with data.
func writeExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs dir, so that a name just made in it survives a crash.
// A filesystem that cannot fsync a directory (EINVAL, ENOTSUP: some FUSE
// and network mounts) is not an error: the file itself is synced.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
