package wallet

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/scrypt"

	"github.com/anchorchat/anchorchat/internal/atomicfile"
)

// The seed file is JSON, mode 0600. The secret is the 32-byte BIP-32 seed,
// encrypted NIP-49 style: key = scrypt(NFKC-free password, salt, N=2^log_n,
// r=8, p=1, 32 bytes), ciphertext = XChaCha20-Poly1305(key, nonce, seed,
// aad = "anchorchat-wallet-v1|" + network). The network name is bound as
// associated data so a mainnet file can't be opened as regtest by accident.
//
// The address counters and the birthday height are not secret and are kept in
// clear beside the ciphertext.

const (
	seedFileVersion = 1
	seedLen         = 32
	// DefaultLogN is the scrypt cost used by Create: the same as the
	// identity keystore's (identity.DefaultLogN, about 0.3 s here).
	DefaultLogN = 17
)

// ErrWrongPassword is returned when the seed file does not decrypt.
var ErrWrongPassword = errors.New("wallet: wrong password or corrupted seed file")

type seedFile struct {
	Version    int    `json:"version"`
	Network    string `json:"network"`
	LogN       uint8  `json:"log_n"`
	Salt       string `json:"salt"`
	Nonce      string `json:"nonce"`
	Ciphertext string `json:"ciphertext"`
	Birthday   int32  `json:"birthday"`
	NextExt    uint32 `json:"next_external"`
	NextInt    uint32 `json:"next_internal"`
}

func aad(network string) []byte { return []byte("anchorchat-wallet-v1|" + network) }

func deriveKey(password, salt []byte, logN uint8) ([]byte, error) {
	if logN < 1 || logN > 22 {
		return nil, fmt.Errorf("wallet: scrypt log_n %d out of range", logN)
	}
	k, err := scrypt.Key(password, salt, 1<<logN, 8, 1, chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("wallet: scrypt: %w", err)
	}
	return k, nil
}

func encryptSeed(seed, password []byte, network string, logN uint8) (*seedFile, error) {
	salt := make([]byte, 16)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("wallet: random salt: %w", err)
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("wallet: random nonce: %w", err)
	}
	key, err := deriveKey(password, salt, logN)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("wallet: aead: %w", err)
	}
	ct := aead.Seal(nil, nonce, seed, aad(network))
	return &seedFile{
		Version:    seedFileVersion,
		Network:    network,
		LogN:       logN,
		Salt:       hex.EncodeToString(salt),
		Nonce:      hex.EncodeToString(nonce),
		Ciphertext: hex.EncodeToString(ct),
	}, nil
}

func (f *seedFile) decrypt(password []byte) ([]byte, error) {
	if f.Version != seedFileVersion {
		return nil, fmt.Errorf("wallet: unsupported seed file version %d", f.Version)
	}
	salt, err1 := hex.DecodeString(f.Salt)
	nonce, err2 := hex.DecodeString(f.Nonce)
	ct, err3 := hex.DecodeString(f.Ciphertext)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("wallet: malformed seed file: %w", err)
	}
	if len(nonce) != chacha20poly1305.NonceSizeX {
		return nil, fmt.Errorf("wallet: malformed seed file: nonce length %d", len(nonce))
	}
	key, err := deriveKey(password, salt, f.LogN)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("wallet: aead: %w", err)
	}
	seed, err := aead.Open(nil, nonce, ct, aad(f.Network))
	if err != nil {
		return nil, ErrWrongPassword
	}
	return seed, nil
}

func readSeedFile(path string) (*seedFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wallet: read seed file: %w", err)
	}
	var f seedFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("wallet: parse seed file %s: %w", path, err)
	}
	return &f, nil
}

// writeSeedFile writes the seed file with mode 0600 (atomicfile.Write):
// never partial under its name, and a new seed never replaces another
// (its coins would be lost): then the error wraps os.ErrExist.
func writeSeedFile(path string, f *seedFile, replace bool) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("wallet: encode seed file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("wallet: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), replace); err != nil {
		return fmt.Errorf("wallet: seed file: %w", err)
	}
	return nil
}

// ChangePassword re-encrypts the seed file at path under newPassword (with
// a new salt and nonce, the same scrypt cost unless logN is set, and the
// counters and birthday kept), replacing the file atomically. A file that
// already opens with newPassword is left as it is, so a change interrupted
// after the wallet and before the identity keystore can simply be run
// again. A password that opens neither way is ErrWrongPassword, and the
// file is not written.
func ChangePassword(path string, oldPassword, newPassword []byte, logN uint8) error {
	f, err := readSeedFile(path)
	if err != nil {
		return err
	}
	seed, err := f.decrypt(oldPassword)
	if errors.Is(err, ErrWrongPassword) {
		if _, err2 := f.decrypt(newPassword); err2 == nil {
			return nil // done already
		}
	}
	if err != nil {
		return err
	}
	if logN == 0 {
		logN = f.LogN
	}
	nf, err := encryptSeed(seed, newPassword, f.Network, logN)
	if err != nil {
		return err
	}
	nf.Birthday, nf.NextExt, nf.NextInt = f.Birthday, f.NextExt, f.NextInt
	return writeSeedFile(path, nf, true)
}
