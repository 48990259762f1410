package storage

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrLocked is returned by Open when another Store, in this process or
// another, has the database open. The writer indexes the ids it stored
// since its last merge in memory (recent.go), so a second writer on the
// same file would not see them and could store an event twice.
var ErrLocked = errors.New("storage: the database is open in another store (one node per data dir)")

// lockFile takes an exclusive flock on path+".lock", created 0600, and
// returns the open file that holds it; closing the file releases it. The
// lock is the open file's, so a second Open in the same process is refused
// as well, and a killed process leaves no stale lock.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: lock %s: %w", path, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		return f, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	default:
		f.Close()
		return nil, fmt.Errorf("storage: lock %s: %w", path, err)
	}
}

// Lock takes the lock Open takes on the database at path, for a tool that
// must not run beside a store on it (a node): it fails with ErrLocked while
// one is open, and a store cannot open while the lock is held. Close the
// returned file to release it.
func Lock(path string) (*os.File, error) { return lockFile(path) }
