package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/storage"
	"github.com/anchorchat/anchorchat/wallet"
)

func init() {
	register(&command{name: "init", summary: "create this node's identity (key, keystore) and config", run: runInit})
	register(&command{name: "id", summary: "show, export, import, re-encrypt or revoke the identity: id show|export|import|passwd|revoke", run: runID})
}

const initHelp = `
Creates the node's identity: a new secp256k1 key (or one you import with
--key-file), stored only as a NIP-49 ncryptsec (scrypt + XChaCha20-Poly1305)
in <datadir>/identity.json, mode 0600; and the config file
<datadir>/anchorchat.conf if there is none. It refuses to overwrite an
existing identity.

The passphrase comes from --passphrase-file, else $ANCHORCHAT_PASSPHRASE,
else a no-echo prompt (asked twice). PINs and short or common passphrases
are refused with the reason.`

// identityFlags are the flags shared by the commands that touch the keystore.
type identityFlags struct {
	network, datadir *string
	passFile         *string
	logN             *logNFlag
}

// minUserLogN is the lowest scrypt cost --scrypt-logn takes outside
// regtest (64 MiB of memory per guess); lower ones exist for tests.
const minUserLogN = 16

// logNFlag is --scrypt-logn: a cost from identity.MinLogN to MaxLogN, and
// whether it was given (when not, a keystore being re-encrypted keeps a
// cost higher than the default).
type logNFlag struct {
	n   uint8
	set bool
}

func (l *logNFlag) String() string {
	if l == nil || !l.set {
		return strconv.Itoa(int(identity.DefaultLogN))
	}
	return strconv.Itoa(int(l.n))
}

func (l *logNFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 8)
	if err != nil || uint8(v) < identity.MinLogN || uint8(v) > identity.MaxLogN {
		return fmt.Errorf("want a whole number from %d to %d", identity.MinLogN, identity.MaxLogN)
	}
	l.n, l.set = uint8(v), true
	return nil
}

func bindIdentityFlags(fs *flag.FlagSet) identityFlags {
	return bindSomeIdentityFlags(fs, true, true)
}

// bindSomeIdentityFlags binds the network and data dir flags, and the
// passphrase and scrypt flags only for a command that uses them (the others
// keep their defaults), so that --help lists what the command reads.
func bindSomeIdentityFlags(fs *flag.FlagSet, pass, logN bool) identityFlags {
	network, datadir := clientFlags(fs)
	f := identityFlags{network: network, datadir: datadir, passFile: new(string), logN: new(logNFlag)}
	if pass {
		fs.StringVar(f.passFile, "passphrase-file", "", "file holding the passphrase; or set ANCHORCHAT_PASSPHRASE (not both); with neither, a prompt")
	}
	if logN {
		fs.Var(f.logN, "scrypt-logn", fmt.Sprintf("scrypt cost as `log2(N)` for a newly written keystore (%d, the default, unlocks in about 0.3 s here; at least %d except on regtest; id passwd without it keeps a higher cost the keystore has)", identity.DefaultLogN, minUserLogN))
	}
	return f
}

// dir checks the flags and returns the data dir.
func (f identityFlags) dir() (string, error) {
	if _, ok := node.Networks[*f.network]; !ok {
		return "", fmt.Errorf("unknown network %q: use mainnet, testnet, signet or regtest", *f.network)
	}
	if f.logN.set && f.logN.n < minUserLogN && *f.network != "regtest" {
		return "", fmt.Errorf("--scrypt-logn %d is too cheap to guard a key on %s: use at least %d; lower costs are for tests on regtest", f.logN.n, *f.network, minUserLogN)
	}
	if *f.datadir != "" {
		return *f.datadir, nil
	}
	return node.DefaultDataDir(*f.network), nil
}

func (f identityFlags) keystore(dir string) *identity.Keystore {
	ks := node.Keystore(dir, slog.New(slog.DiscardHandler))
	if f.logN.set {
		ks.LogN = f.logN.n
	}
	return ks
}

func (f identityFlags) passphrase(ctx context.Context, prompt string, confirm bool) (string, error) {
	p, _, err := identity.ReadPassphrase(ctx, identity.PassphraseOptions{File: *f.passFile, Prompt: prompt, Confirm: confirm})
	return p, err
}

func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", "init [--network N] [--datadir DIR] [--handle NAME] [--key-file FILE]", initHelp, stdout)
	f := bindIdentityFlags(fs.FlagSet)
	handle := fs.String("handle", "", "your handle (lowercase letters, digits, _ - .), written to the config")
	keyFile := fs.String("key-file", "", "import this key instead of generating one: a file holding hex, nsec or ncryptsec (- for stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return createIdentity(ctx, f, *handle, *keyFile, stdout)
}

func createIdentity(ctx context.Context, f identityFlags, handle, keyFile string, stdout io.Writer) error {
	dir, err := f.dir()
	if err != nil {
		return err
	}
	if handle != "" {
		if handle, err = identity.NormalizeHandle(handle); err != nil {
			return err
		}
	}
	ks := f.keystore(dir)
	if exists, err := ks.Exists(); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("an identity already exists in %s; refusing to overwrite it (back it up with `anchorchat id export`)", ks.Path)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	var key *identity.Key
	secret := ""
	if keyFile != "" {
		if secret, err = readSecretFile(keyFile); err != nil {
			return err
		}
	}
	if strings.HasPrefix(secret, "ncryptsec1") {
		pass, err := f.passphrase(ctx, "Passphrase of the ncryptsec: ", false)
		if err != nil {
			return err
		}
		// Re-encrypt under this keystore's cost and the passphrase policy.
		if key, err = ks.Import(ctx, secret, pass, true); err != nil {
			return err
		}
	} else {
		if secret != "" {
			key, err = identity.ParseSecretKey(secret)
		} else {
			key, err = identity.GenerateKey()
		}
		if err != nil {
			return err
		}
		pass, err := f.passphrase(ctx, "New passphrase for the identity: ", true)
		if err != nil {
			return err
		}
		if err := ks.Create(ctx, key, pass); err != nil {
			return err
		}
	}
	defer key.Wipe()

	conf := filepath.Join(dir, "anchorchat.conf")
	if err := writeConfigDefaults(conf, *f.network, handle); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "identity created\n  npub:        %s\n  fingerprint: %s\n", key.Npub(), key.Fingerprint())
	if handle != "" {
		fmt.Fprintf(stdout, "  handle:      %s\n", handle)
	}
	start := "anchorchat node --network " + *f.network
	if filepath.Clean(dir) != filepath.Clean(node.DefaultDataDir(*f.network)) {
		start += " --datadir " + shellQuote(dir)
	}
	fmt.Fprintf(stdout, "  keystore:    %s (NIP-49, mode 0600)\n  config:      %s\n\nStart the node with: %s\n", ks.Path, conf, start)
	return nil
}

// writeConfigDefaults creates the config file, or adds the handle to an existing one that has none.
func writeConfigDefaults(path, network, handle string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		content := "# anchorchat node configuration: `name = value`, any flag of `anchorchat node --help`.\nnetwork = " + network + "\n"
		if handle != "" {
			content += "handle = " + handle + "\n"
		}
		return os.WriteFile(path, []byte(content), 0o600)
	}
	if err != nil || handle == "" {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "handle" {
			return nil // keep the user's own setting
		}
	}
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	sep := ""
	if len(b) > 0 && b[len(b)-1] != '\n' {
		sep = "\n" // the last line ends here, not in ours
	}
	_, err = fmt.Fprintf(fh, "%shandle = %s\n", sep, handle)
	return err
}

// shellQuote is s as one shell word: as it is when it has nothing a shell
// would act on, otherwise in single quotes (inside which only ' itself
// needs care).
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%=,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func readSecretFile(path string) (string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("key file: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	// The first line that is not blank is the key. A file without one is
	// an error: taken as no --key-file, it made a new key instead.
	sc := bufio.NewScanner(io.LimitReader(r, 4096))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			return line, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("key file: %w", err)
	}
	name := path
	if path == "-" {
		name = "standard input"
	}
	return "", fmt.Errorf("key file: %s holds no key (want hex, nsec or ncryptsec); to make a new key, leave out --key-file", name)
}

const idHelp = `
  id show                  npub, hex pubkey, fingerprint and handle (no passphrase needed)
  id export                print the encrypted key (ncryptsec) for a backup
  id export --nsec --i-understand-this-reveals-my-key
                           print the plain nsec (asks for the passphrase)
  id import --key-file F   create the identity from an existing key (hex, nsec, ncryptsec)
  id passwd                re-encrypt the keystore under a new passphrase
  id revoke --yes [--reason TEXT]
                           revoke your handle for good (through the running node)`

func runID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		out := stdout
		if len(args) == 0 {
			out = stderr
		}
		fmt.Fprintf(out, "Usage: anchorchat id <show|export|import|passwd|revoke> [flags]\n%s\n\nRun `anchorchat id SUBCOMMAND --help` for its flags.\n", idHelp)
		if len(args) == 0 {
			return errors.New("id needs a subcommand")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	help, ok := idSubs[sub]
	if !ok {
		return fmt.Errorf("unknown id subcommand %q (show, export, import, passwd, revoke; see `anchorchat id --help`)", sub)
	}
	fs := newFlagSet("id "+sub, help.synopsis, help.text, stdout)
	f := bindSomeIdentityFlags(fs.FlagSet, help.pass, help.logN)
	switch sub {
	case "show":
		if err := fs.Parse(args); err != nil {
			return err
		}
		return idShow(f, stdout)
	case "export":
		nsec := fs.Bool("nsec", false, "print the plain nsec instead of the ncryptsec (needs --i-understand-this-reveals-my-key)")
		sure := fs.Bool("i-understand-this-reveals-my-key", false, "confirm printing the unencrypted secret key")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return idExport(ctx, f, *nsec, *sure, stdout, stderr)
	case "import":
		keyFile := fs.String("key-file", "", "file holding the key: hex, nsec or ncryptsec (- for stdin)")
		handle := fs.String("handle", "", "your handle, written to the config")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *keyFile == "" {
			return errors.New("id import needs --key-file (a file, or - for stdin): keys never go on the command line")
		}
		return createIdentity(ctx, f, *handle, *keyFile, stdout)
	case "passwd":
		newFile := fs.String("new-passphrase-file", "", "file holding the new passphrase (else a prompt, asked twice)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return idPasswd(ctx, f, *newFile, stdout)
	case "revoke":
		reason := fs.String("reason", "", fmt.Sprintf("why, for those who verify the handle (at most %d bytes)", identity.MaxRevokeReason))
		sure := fs.Bool("yes", false, "confirm: the handle is revoked for good")
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return idRevoke(ctx, f, *reason, *sure, *asJSON, stdout)
	}
	return nil // not reached: idSubs has the same names as the cases
}

// idSubs is each id subcommand's help, and which of the passphrase and
// scrypt flags it takes.
var idSubs = map[string]struct {
	synopsis, text string
	pass, logN     bool
}{
	"show": {synopsis: "id show [flags]", text: "Prints the npub, hex public key, fingerprint and handle. No passphrase needed."},
	"export": {synopsis: "id export [--nsec --i-understand-this-reveals-my-key] [flags]", pass: true,
		text: "Prints the encrypted key (ncryptsec) for a backup; no passphrase needed. With --nsec and\n" +
			"--i-understand-this-reveals-my-key it asks for the passphrase and prints the plain nsec."},
	"import": {synopsis: "id import --key-file F [--handle H] [flags]", pass: true, logN: true,
		text: "Creates the identity from an existing key (hex, nsec or ncryptsec) read from a file, or\n" +
			"from stdin with --key-file -; keys never go on the command line. It is stored as an\n" +
			"ncryptsec under a new passphrase (asked twice); an imported ncryptsec is re-encrypted\n" +
			"under its own passphrase, which must pass the same policy."},
	"passwd": {synopsis: "id passwd [--new-passphrase-file F] [flags]", pass: true, logN: true,
		text: "Re-encrypts the keystore under a new passphrase (from --new-passphrase-file, else a\n" +
			"prompt asked twice). Restart the node with the new one."},
	"revoke": {synopsis: "id revoke --yes [--reason TEXT] [flags]",
		text: "Revokes your handle: the running node signs a revocation (kind 3781) of the handle's\n" +
			"current claim with its key, stores and publishes it, queues it for anchoring, and stops\n" +
			"serving the handle over NIP-05. Do this when the key may be in someone else's hands.\n" +
			"Anyone who verifies the handle then sees REVOKED, with your reason. It is for good:\n" +
			"the earliest anchored claim of a handle always wins, and that chain has now ended, so\n" +
			"nobody can hold the handle again. Needs --yes."},
}

func idShow(f identityFlags, stdout io.Writer) error {
	dir, err := f.dir()
	if err != nil {
		return err
	}
	pk, err := f.keystore(dir).PublicKey()
	if err != nil {
		return noIdentity(err, dir)
	}
	npub, err := identity.EncodeNpub(pk)
	if err != nil {
		return err
	}
	handle := "(none: set `handle = NAME` in the config)"
	if cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--network", *f.network, "--datadir", dir}, os.Getenv); err == nil && cfg.Handle != "" {
		handle = cfg.Handle
	}
	fmt.Fprintf(stdout, "npub:        %s\npubkey:      %s\nfingerprint: %s\nhandle:      %s\n", npub, pk, identity.Fingerprint(pk), handle)
	return nil
}

func noIdentity(err error, dir string) error {
	if errors.Is(err, identity.ErrNoKeystore) {
		return fmt.Errorf("no identity in %s: create one with `anchorchat init`", dir)
	}
	return err
}

func idExport(ctx context.Context, f identityFlags, nsec, sure bool, stdout, stderr io.Writer) error {
	dir, err := f.dir()
	if err != nil {
		return err
	}
	ks := f.keystore(dir)
	if !nsec {
		nc, err := ks.Ncryptsec()
		if err != nil {
			return noIdentity(err, dir)
		}
		fmt.Fprintln(stdout, nc)
		return nil
	}
	if !sure {
		return errors.New("--nsec prints your secret key in the clear; add --i-understand-this-reveals-my-key if you really mean it")
	}
	pass, err := f.passphrase(ctx, "Passphrase: ", false)
	if err != nil {
		return err
	}
	key, err := ks.Unlock(ctx, pass)
	if err != nil {
		return noIdentity(err, dir)
	}
	defer key.Wipe()
	s, err := key.Nsec()
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "WARNING: this is your unencrypted secret key. Anyone who sees it can impersonate you forever.")
	fmt.Fprintln(stdout, s)
	return nil
}

func idPasswd(ctx context.Context, f identityFlags, newFile string, stdout io.Writer) error {
	dir, err := f.dir()
	if err != nil {
		return err
	}
	ks := f.keystore(dir)
	oldPass, err := f.passphrase(ctx, "Current passphrase: ", false)
	if err != nil {
		return err
	}
	newPass, _, err := identity.ReadPassphrase(ctx, identity.PassphraseOptions{File: newFile, Env: "-", Prompt: "New passphrase: ", Confirm: true})
	if err != nil {
		return err
	}
	// The anchoring wallet is encrypted under the same passphrase (the node
	// opens it with the identity's): it changes too, first, with the node
	// stopped, since a running node rewrites the file (its address
	// counters) under the passphrase it started with.
	walletPath := filepath.Join(dir, node.WalletFile)
	_, err = os.Stat(walletPath)
	hasWallet := err == nil
	if hasWallet {
		lock, err := storage.Lock(filepath.Join(dir, node.DBFile))
		if errors.Is(err, storage.ErrLocked) {
			return fmt.Errorf("a node is running on %s: stop it first (its anchoring wallet, %s, changes passphrase too, and the running node would write it back under the old one)", dir, node.WalletFile)
		}
		if err != nil {
			return err
		}
		defer lock.Close()
		if !ks.SkipPolicy {
			if err := identity.CheckPassphrase(newPass); err != nil {
				return err
			}
		}
		key, err := ks.Unlock(ctx, oldPass) // the old passphrase is right before anything is written
		if err != nil {
			return noIdentity(err, dir)
		}
		key.Wipe()
		var logN uint8
		if f.logN.set {
			logN = f.logN.n
		}
		if err := wallet.ChangePassword(walletPath, []byte(oldPass), []byte(newPass), logN); err != nil {
			return fmt.Errorf("the anchoring wallet %s: %w", walletPath, err)
		}
	}
	if err := ks.ChangePassphrase(ctx, oldPass, newPass); err != nil {
		return noIdentity(err, dir)
	}
	if hasWallet {
		fmt.Fprintln(stdout, "passphrase changed, for the identity and the anchoring wallet; start the node with the new one")
	} else {
		fmt.Fprintln(stdout, "passphrase changed; restart the node with the new one")
	}
	return nil
}

func idRevoke(ctx context.Context, f identityFlags, reason string, sure, asJSON bool, stdout io.Writer) error {
	if !sure {
		return errors.New("id revoke ends your handle for good (nobody can hold it again): run it with --yes if that is what you want")
	}
	c, err := dialNode(*f.network, *f.datadir)
	if err != nil {
		return err
	}
	var res node.RevokeResult
	if err := c.Do(ctx, http.MethodPost, "/v1/identity/revoke", jsonBody(node.RevokeRequest{Reason: reason}), &res); err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "@%s revoked\nrevocation: %s\nclaim:      %s\n", res.Handle, res.Revocation, res.Claim)
	if res.Anchoring {
		fmt.Fprintln(stdout, "It is queued for anchoring with the next batch (`anchorchat anchor now` to anchor it at once).")
	} else {
		fmt.Fprintln(stdout, "This node does not anchor (no btcd): the revocation counts as soon as verifiers fetch it.")
	}
	fmt.Fprintln(stdout, "Remove `handle` from the config, or the node will keep warning about it.")
	return nil
}
