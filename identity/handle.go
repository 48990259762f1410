package identity

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// Handle length bounds, in bytes (= characters: handles are ASCII).
const (
	MinHandleLen = 1
	MaxHandleLen = 32
)

// ErrInvalidHandle is wrapped by every handle syntax error.
var ErrInvalidHandle = errors.New("identity: invalid handle")

// NormalizeHandle turns user input into a canonical handle: it trims
// spaces, applies Unicode NFKC (so full-width "＠ＡＬＩＣＥ" becomes
// "@ALICE"), trims again, strips one leading '@', lowercases A-Z, and checks
// ValidateHandle. Anything still non-ASCII after NFKC is refused (no
// homoglyph games), also a capital whose Unicode lower case is ASCII.
func NormalizeHandle(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = norm.NFKC.String(s)
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "@")
	s = lowerASCII(s)
	if err := ValidateHandle(s); err != nil {
		return "", err
	}
	return s, nil
}

// ValidateHandle checks that h is already a canonical handle: 1 to 32
// characters from a-z, 0-9, '_', '-', '.', with no leading, trailing or
// consecutive dots. Claims carry handles in this form only.
func ValidateHandle(h string) error {
	if len(h) < MinHandleLen {
		return fmt.Errorf("%w: empty", ErrInvalidHandle)
	}
	for i, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		case r >= 'A' && r <= 'Z':
			return fmt.Errorf("%w: %q has upper-case letters (handles are lower-case)", ErrInvalidHandle, h)
		case r >= 0x80:
			return fmt.Errorf("%w: %q has a non-ASCII character at byte %d (only a-z 0-9 _ - . are allowed)", ErrInvalidHandle, h, i)
		default:
			return fmt.Errorf("%w: %q has the character %q (only a-z 0-9 _ - . are allowed)", ErrInvalidHandle, h, r)
		}
	}
	if len(h) > MaxHandleLen {
		return fmt.Errorf("%w: %d characters, at most %d", ErrInvalidHandle, len(h), MaxHandleLen)
	}
	if strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
		return fmt.Errorf("%w: %q starts or ends with a dot", ErrInvalidHandle, h)
	}
	if strings.Contains(h, "..") {
		return fmt.Errorf("%w: %q has two dots in a row", ErrInvalidHandle, h)
	}
	return nil
}

// lowerASCII lowercases A-Z only. strings.ToLower would turn U+0130 (İ)
// into "i" and so let a non-ASCII character through the ASCII checks that
// follow.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}
