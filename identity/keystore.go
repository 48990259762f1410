package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcutil/bech32"

	"github.com/anchorchat/anchorchat/internal/atomicfile"
)

// Scrypt cost bounds for NIP-49 (N = 2^logN, r = 8, p = 1; memory ≈ 2^logN KiB).
const (
	// DefaultLogN is the default scrypt cost: the smallest at or above the
	// issue's "at least a quarter of a second here". Measured on the
	// project's 2-core machine with BenchmarkUnlock: log_n 16 unlocks in
	// 0.14 s when the machine is quiet (0.23 s at load 10), 17 in about
	// 0.29 s quiet (0.52 s at load 10), 18 in 0.92 s at load 10.
	DefaultLogN uint8 = 17
	// MinLogN is the lowest cost accepted when writing a keystore. Low
	// values exist for tests only.
	MinLogN uint8 = 1
	// MaxLogN caps the cost read from any ncryptsec (2^22 KiB = 4 GiB), so
	// a hostile import cannot exhaust memory.
	MaxLogN uint8 = 22
)

// Keystore errors.
var (
	// ErrWrongPassphrase: the passphrase does not decrypt the keystore.
	ErrWrongPassphrase = errors.New("identity: wrong passphrase")
	// ErrKeystoreExists: Create refuses to overwrite an existing identity.
	ErrKeystoreExists = errors.New("identity: keystore already exists")
	// ErrNoKeystore: there is no keystore file at the path.
	ErrNoKeystore = errors.New("identity: no keystore")
	// ErrCorruptKeystore: the file is not a keystore this version reads.
	ErrCorruptKeystore = errors.New("identity: corrupt keystore")
)

// keystoreVersion is the "version" field of the keystore file.
const keystoreVersion = 1

// keystoreFile is the on-disk JSON form. The only secret in it is the
// ncryptsec; pubkey is there so `id show` works without the passphrase
// (it is checked against the decrypted key on every unlock).
type keystoreFile struct {
	Version   int    `json:"version"`
	PubKey    string `json:"pubkey"`
	Ncryptsec string `json:"ncryptsec"`
	CreatedAt string `json:"created_at,omitempty"`
}

// Keystore is the identity file: one NIP-49 ncryptsec in a JSON document
// at Path, mode 0600, in a directory of mode 0700.
type Keystore struct {
	// Path of the keystore file, e.g. ~/.anchorchat/identity.json.
	Path string
	// LogN is the scrypt cost used when writing (Create, ChangePassphrase,
	// Import). 0 means DefaultLogN, except that ChangePassphrase then keeps
	// the keystore's own cost when that is higher.
	LogN uint8
	// SkipPolicy disables CheckPassphrase on new passphrases (tests and
	// importing a key whose passphrase the user already chose elsewhere
	// should NOT set it; it exists for tests with throwaway keys).
	SkipPolicy bool
	// Logger receives events (never secrets). nil means slog.Default().
	Logger *slog.Logger
}

// NewKeystore returns a Keystore at path with the default cost.
func NewKeystore(path string) *Keystore { return &Keystore{Path: path} }

func (ks *Keystore) logger() *slog.Logger {
	if ks.Logger != nil {
		return ks.Logger
	}
	return slog.Default()
}

func (ks *Keystore) logN() uint8 {
	if ks.LogN == 0 {
		return DefaultLogN
	}
	return ks.LogN
}

func checkLogN(logN uint8) error {
	if logN < MinLogN || logN > MaxLogN {
		return fmt.Errorf("identity: scrypt log_n %d out of range [%d, %d]", logN, MinLogN, MaxLogN)
	}
	return nil
}

// Exists reports whether a keystore file is present.
func (ks *Keystore) Exists() (bool, error) {
	_, err := os.Lstat(ks.Path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("identity: stat keystore %s: %w", ks.Path, err)
	}
}

// Create encrypts key with passphrase and writes a new keystore. It refuses
// (ErrKeystoreExists) if any file exists at Path, checks the passphrase
// policy, and writes atomically (temp file, fsync, link into place).
func (ks *Keystore) Create(ctx context.Context, key *Key, passphrase string) error {
	if exists, err := ks.Exists(); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("%w at %s: refusing to overwrite an existing identity (move it away first)", ErrKeystoreExists, ks.Path)
	}
	if !ks.SkipPolicy {
		if err := CheckPassphrase(passphrase); err != nil {
			return err
		}
	}
	nc, err := encryptCtx(ctx, key, passphrase, ks.logN())
	if err != nil {
		return err
	}
	if err := ks.write(nc, key.PublicKey(), false); err != nil {
		return err
	}
	ks.logger().Info("identity keystore created", "path", ks.Path, "npub", key.Npub(),
		"fingerprint", key.Fingerprint(), "log_n", ks.logN())
	return nil
}

// Import stores an existing ncryptsec as a new keystore after checking that
// passphrase opens it. The ncryptsec is re-encrypted at this keystore's
// cost only if reencrypt is true (otherwise its bytes are kept as given).
// It refuses to overwrite, like Create.
func (ks *Keystore) Import(ctx context.Context, ncryptsec, passphrase string, reencrypt bool) (*Key, error) {
	if exists, err := ks.Exists(); err != nil {
		return nil, err
	} else if exists {
		return nil, fmt.Errorf("%w at %s: refusing to overwrite an existing identity", ErrKeystoreExists, ks.Path)
	}
	ncryptsec = strings.TrimSpace(ncryptsec)
	key, err := decryptCtx(ctx, ncryptsec, passphrase)
	if err != nil {
		return nil, err
	}
	if reencrypt {
		if !ks.SkipPolicy {
			if err := CheckPassphrase(passphrase); err != nil {
				key.Wipe()
				return nil, err
			}
		}
		if ncryptsec, err = encryptCtx(ctx, key, passphrase, ks.logN()); err != nil {
			key.Wipe()
			return nil, err
		}
	}
	if err := ks.write(ncryptsec, key.PublicKey(), false); err != nil {
		key.Wipe()
		return nil, err
	}
	ks.logger().Info("identity keystore imported", "path", ks.Path, "npub", key.Npub())
	return key, nil
}

// Unlock decrypts the keystore. A wrong passphrase returns an error
// wrapping ErrWrongPassphrase; the file is never written by Unlock.
func (ks *Keystore) Unlock(ctx context.Context, passphrase string) (*Key, error) {
	f, err := ks.read()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	key, err := decryptCtx(ctx, f.Ncryptsec, passphrase)
	if err != nil {
		if errors.Is(err, ErrWrongPassphrase) {
			ks.logger().Warn("identity unlock failed: wrong passphrase", "path", ks.Path)
		}
		return nil, err
	}
	if f.PubKey != "" && f.PubKey != key.PublicKey() {
		key.Wipe()
		return nil, fmt.Errorf("%w: %s: stored pubkey does not match the encrypted key (file tampered with?)", ErrCorruptKeystore, ks.Path)
	}
	ks.logger().Info("identity unlocked", "npub", key.Npub(), "took", time.Since(start).Round(time.Millisecond))
	return key, nil
}

// ChangePassphrase re-encrypts the keystore under a new passphrase (at
// ks.LogN) and replaces the file atomically. The old passphrase must open
// it; on any error the old file is left untouched.
func (ks *Keystore) ChangePassphrase(ctx context.Context, oldPass, newPass string) error {
	if !ks.SkipPolicy {
		if err := CheckPassphrase(newPass); err != nil {
			return err
		}
	}
	key, err := ks.Unlock(ctx, oldPass)
	if err != nil {
		return err
	}
	defer key.Wipe()
	logN := ks.logN()
	if ks.LogN == 0 {
		// Unset: keep a cost higher than the default. A keystore made
		// harder to crack must not get cheaper by a change of passphrase.
		if f, err := ks.read(); err == nil {
			if cur, err := NcryptsecLogN(f.Ncryptsec); err == nil {
				logN = max(logN, cur)
			}
		}
	}
	nc, err := encryptCtx(ctx, key, newPass, logN)
	if err != nil {
		return err
	}
	if err := ks.write(nc, key.PublicKey(), true); err != nil {
		return err
	}
	ks.logger().Info("identity passphrase changed", "path", ks.Path, "npub", key.Npub(), "log_n", logN)
	return nil
}

// Ncryptsec returns the stored ncryptsec (what `id export` prints by
// default). It needs no passphrase and reveals nothing without one.
func (ks *Keystore) Ncryptsec() (string, error) {
	f, err := ks.read()
	if err != nil {
		return "", err
	}
	return f.Ncryptsec, nil
}

// PublicKey returns the stored public key (hex) without unlocking, for
// `id show`. It is not authenticated until the next Unlock.
func (ks *Keystore) PublicKey() (string, error) {
	f, err := ks.read()
	if err != nil {
		return "", err
	}
	if f.PubKey == "" {
		return "", fmt.Errorf("%w: %s has no pubkey field; unlock to learn it", ErrCorruptKeystore, ks.Path)
	}
	return f.PubKey, nil
}

func (ks *Keystore) read() (*keystoreFile, error) {
	fh, err := os.Open(ks.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (run `anchorchat init` or `anchorchat id import`)", ErrNoKeystore, ks.Path)
	} else if err != nil {
		return nil, fmt.Errorf("identity: open keystore: %w", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		ks.logger().Warn("identity keystore is readable by others; run chmod 600", "path", ks.Path, "mode", st.Mode().Perm().String())
	}
	b, err := io.ReadAll(io.LimitReader(fh, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("identity: read keystore: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if strings.HasPrefix(t, "ncryptsec1") { // a bare ncryptsec file is accepted too
		return &keystoreFile{Version: keystoreVersion, Ncryptsec: t}, nil
	}
	var f keystoreFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: not JSON: %w", ErrCorruptKeystore, ks.Path, err)
	}
	if f.Version != keystoreVersion {
		return nil, fmt.Errorf("%w: %s: version %d, this build reads %d", ErrCorruptKeystore, ks.Path, f.Version, keystoreVersion)
	}
	if !strings.HasPrefix(f.Ncryptsec, "ncryptsec1") {
		return nil, fmt.Errorf("%w: %s: no ncryptsec", ErrCorruptKeystore, ks.Path)
	}
	return &f, nil
}

// write stores the keystore atomically. With replace false it fails if the
// path exists (link(2) is atomic: two concurrent inits cannot both win).
func (ks *Keystore) write(ncryptsec, pubHex string, replace bool) error {
	dir := filepath.Dir(ks.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: create keystore directory: %w", err)
	}
	b, err := json.MarshalIndent(keystoreFile{
		Version:   keystoreVersion,
		PubKey:    pubHex,
		Ncryptsec: ncryptsec,
		CreatedAt: time.Now().UTC().Format(time.RFC3339),
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("identity: encode keystore: %w", err)
	}
	b = append(b, '\n')
	return writeFileAtomic(ks.Path, b, replace)
}

// writeFileAtomic writes data to path with mode 0600 (atomicfile.Write):
// a new keystore never replaces an existing one.
func writeFileAtomic(path string, data []byte, replace bool) error {
	if err := atomicfile.Write(path, data, replace); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w at %s: refusing to overwrite an existing identity", ErrKeystoreExists, path)
		}
		return fmt.Errorf("identity: write keystore: %w", err)
	}
	return nil
}

// NcryptsecLogN parses an ncryptsec's envelope (without decrypting) and
// returns its scrypt log_n. It rejects malformed input and costs above
// MaxLogN.
func NcryptsecLogN(ncryptsec string) (uint8, error) {
	prefix, bits5, err := bech32.DecodeNoLimit(strings.TrimSpace(ncryptsec))
	if err != nil {
		return 0, fmt.Errorf("%w: ncryptsec: bech32: %w", ErrCorruptKeystore, err)
	}
	if prefix != "ncryptsec" {
		return 0, fmt.Errorf("%w: expected an ncryptsec, got prefix %q", ErrCorruptKeystore, prefix)
	}
	data, err := bech32.ConvertBits(bits5, 5, 8, false)
	if err != nil {
		return 0, fmt.Errorf("%w: ncryptsec: %w", ErrCorruptKeystore, err)
	}
	// version(1) log_n(1) salt(16) nonce(24) ksb(1) ciphertext(32+16)
	if len(data) != 91 {
		return 0, fmt.Errorf("%w: ncryptsec is %d bytes, want 91", ErrCorruptKeystore, len(data))
	}
	if data[0] != 0x02 {
		return 0, fmt.Errorf("%w: ncryptsec version 0x%02x, want 0x02", ErrCorruptKeystore, data[0])
	}
	if data[1] > MaxLogN || data[1] < 1 {
		return 0, fmt.Errorf("%w: ncryptsec log_n %d out of range [1, %d]", ErrCorruptKeystore, data[1], MaxLogN)
	}
	// NIP-49 defines key security bytes 0x00, 0x01 and 0x02 only.
	if ksb := data[1+1+16+24]; ksb > 0x02 {
		return 0, fmt.Errorf("%w: ncryptsec key security byte 0x%02x, want 0x00, 0x01 or 0x02", ErrCorruptKeystore, ksb)
	}
	return data[1], nil
}

// encryptCtx runs the (slow) NIP-49 encryption, giving up on ctx.
func encryptCtx(ctx context.Context, key *Key, passphrase string, logN uint8) (string, error) {
	type res struct {
		s   string
		err error
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	ch := make(chan res, 1)
	go func() {
		s, err := key.Ncryptsec(passphrase, logN)
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("identity: encrypt key: %w", ctx.Err())
	}
}

// decryptCtx runs the (slow) NIP-49 decryption, giving up on ctx; a key
// decrypted after cancellation is wiped.
func decryptCtx(ctx context.Context, ncryptsec, passphrase string) (*Key, error) {
	type res struct {
		k   *Key
		err error
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan res, 1)
	go func() {
		k, err := KeyFromNcryptsec(ncryptsec, passphrase)
		ch <- res{k, err}
	}()
	select {
	case r := <-ch:
		return r.k, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.k != nil {
				r.k.Wipe()
			}
		}()
		return nil, fmt.Errorf("identity: unlock: %w", ctx.Err())
	}
}
