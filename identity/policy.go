package identity

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Passphrase policy parameters.
const (
	// MinPassphraseLen is the minimum length in characters (after NFKC).
	MinPassphraseLen = 12
	// MaxPassphraseLen bounds what is hashed (scrypt does not care, but a
	// 1 MiB "passphrase" from a wrong file is a mistake worth reporting).
	MaxPassphraseLen = 1024
	// MinPassphraseBits is the minimum estimated strength.
	MinPassphraseBits = 50.0
)

// ErrWeakPassphrase is wrapped by every policy refusal (see PolicyError).
var ErrWeakPassphrase = errors.New("identity: passphrase refused")

// PolicyError says why a passphrase was refused. Reason never contains the
// passphrase itself.
type PolicyError struct{ Reason string }

func (e *PolicyError) Error() string { return ErrWeakPassphrase.Error() + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrWeakPassphrase) hold.
func (e *PolicyError) Unwrap() error { return ErrWeakPassphrase }

func refuse(format string, a ...any) error { return &PolicyError{Reason: fmt.Sprintf(format, a...)} }

//go:embed common_passwords.txt
var commonPasswordsTxt string

var commonPasswords = func() map[string]bool {
	m := make(map[string]bool, 400)
	for _, l := range strings.Split(commonPasswordsTxt, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m[strings.ToLower(l)] = true
	}
	return m
}()

// commonWordBits is what one common-list word is worth to an attacker who
// tries the list first: log2(list size), rounded up.
var commonWordBits = math.Ceil(math.Log2(float64(len(commonPasswords))))

// CheckPassphrase applies the passphrase policy and returns nil or a
// *PolicyError (wrapping ErrWeakPassphrase) with the first reason found:
// empty, digits only (a PIN), a common password (also with digits or
// symbols appended, or spaces removed), shorter than MinPassphraseLen,
// a keyboard/alphabet sequence, one short pattern repeated, four or more
// identical characters in a row, or an estimated strength below
// MinPassphraseBits (see PassphraseStrength).
func CheckPassphrase(p string) error {
	p = norm.NFKC.String(p)
	n := utf8.RuneCountInString(p)
	if n == 0 || strings.TrimSpace(p) == "" {
		return refuse("passphrase is empty")
	}
	if n > MaxPassphraseLen {
		return refuse("passphrase is %d characters long, at most %d (is this the right file?)", n, MaxPassphraseLen)
	}
	if isAllDigits(p) {
		return refuse("passphrase is only digits (a PIN): a PIN of %d digits has at most %.0f bits; use several words", n, float64(n)*math.Log2(10))
	}
	if isCommon(p) {
		return refuse("passphrase is a common password (on the list attackers try first)")
	}
	if n < MinPassphraseLen {
		return refuse("passphrase is too short: %d characters, need at least %d", n, MinPassphraseLen)
	}
	if isSequence(p) {
		return refuse("passphrase is a sequence of consecutive characters")
	}
	if unit := repeatedUnit(p); unit > 0 {
		return refuse("passphrase is a pattern of %d characters repeated", unit)
	}
	if run := longestRun(p); run >= 4 {
		return refuse("passphrase has %d identical characters in a row", run)
	}
	if bits := PassphraseStrength(p); bits < MinPassphraseBits {
		return refuse("passphrase is too predictable: about %.0f bits estimated, need %.0f (add more words)", bits, MinPassphraseBits)
	}
	return nil
}

// PassphraseStrength returns a rough entropy estimate in bits: each
// character costs log2 of the alphabet it draws from (lower, upper, digits,
// symbols, other Unicode), a repeated or consecutive character costs 1-2
// bits, and a word from the common-password list costs only log2(list
// size). It is deliberately conservative for patterns and generous for
// random text; it is a guard rail, not a proof.
func PassphraseStrength(p string) float64 {
	p = norm.NFKC.String(p)
	rs := []rune(p)
	if len(rs) == 0 {
		return 0
	}
	var lower, upper, digit, symbol, other bool
	for _, r := range rs {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		case r < 128:
			symbol = true
		default:
			other = true
		}
	}
	pool := 0
	for _, c := range []struct {
		on bool
		n  int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {symbol, 33}, {other, 100}} {
		if c.on {
			pool += c.n
		}
	}
	perChar := math.Log2(float64(pool))
	low := []rune(strings.ToLower(p))
	bits := 0.0
	for i := 0; i < len(rs); {
		if w := longestCommonWordAt(low, i); w > 0 {
			bits += commonWordBits
			i += w
			continue
		}
		switch {
		case i > 0 && rs[i] == rs[i-1]:
			bits++
		case i > 0 && (rs[i] == rs[i-1]+1 || rs[i] == rs[i-1]-1):
			bits += 2
		default:
			bits += perChar
		}
		i++
	}
	return bits
}

// longestCommonWordAt returns the length of the longest common-list entry of
// at least 4 characters starting at low[i], or 0.
func longestCommonWordAt(low []rune, i int) int {
	best := 0
	for j := i + 4; j <= len(low) && j-i <= 32; j++ {
		if commonPasswords[string(low[i:j])] {
			best = j - i
		}
	}
	return best
}

// isAllDigits: digits only, allowing the separators people put in PINs.
func isAllDigits(p string) bool {
	digits := 0
	for _, r := range p {
		switch {
		case unicode.IsDigit(r):
			digits++
		case r == ' ' || r == '-' || r == '.':
		default:
			return false
		}
	}
	return digits > 0
}

// isCommon matches the list exactly, case-insensitively, without spaces,
// and after stripping trailing digits and symbols.
func isCommon(p string) bool {
	l := strings.ToLower(strings.TrimSpace(p))
	if commonPasswords[l] || commonPasswords[strings.ReplaceAll(l, " ", "")] {
		return true
	}
	stem := strings.TrimRightFunc(l, func(r rune) bool { return !unicode.IsLetter(r) })
	stem = strings.TrimLeftFunc(stem, func(r rune) bool { return !unicode.IsLetter(r) })
	return stem != "" && commonPasswords[stem]
}

// keyboardRows are sequences people walk along.
var keyboardRows = []string{
	"abcdefghijklmnopqrstuvwxyz", "0123456789",
	"qwertyuiop", "asdfghjkl", "zxcvbnm", "qwertzuiop", "azertyuiop", "1234567890",
}

// isSequence reports whether p is a run of consecutive characters (by code
// point, up or down) or a contiguous walk along a keyboard row.
func isSequence(p string) bool {
	rs := []rune(strings.ToLower(p))
	if len(rs) < 3 {
		return false
	}
	step := rs[1] - rs[0]
	if step == 1 || step == -1 {
		ok := true
		for i := 2; i < len(rs); i++ {
			if rs[i]-rs[i-1] != step {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	l := string(rs)
	for _, row := range keyboardRows {
		doubled := row + row
		rev := reverse(doubled)
		if strings.Contains(doubled, l) || strings.Contains(rev, l) {
			return true
		}
	}
	return false
}

func reverse(s string) string {
	rs := []rune(s)
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
	return string(rs)
}

// repeatedUnit returns the length of the shortest unit u (shorter than p)
// such that p is u repeated (the last copy may be partial), or 0.
func repeatedUnit(p string) int {
	rs := []rune(p)
	for u := 1; u <= len(rs)/2; u++ {
		ok := true
		for i := u; i < len(rs); i++ {
			if rs[i] != rs[i-u] {
				ok = false
				break
			}
		}
		if ok {
			return u
		}
	}
	return 0
}

func longestRun(p string) int {
	best, cur := 0, 0
	var prev rune = -1
	for _, r := range p {
		if r == prev {
			cur++
		} else {
			cur = 1
		}
		prev = r
		best = max(best, cur)
	}
	return best
}
