package anchor

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzProofDecode: the strict decoder never panics, and whatever it accepts
// re-encodes to exactly the same bytes (one encoding per proof).
// Seeds run as a plain test; fuzz with
//
//	go test -tags libsecp256k1 -run '^$' -fuzz FuzzProofDecode ./anchor
func FuzzProofDecode(f *testing.F) {
	good, _ := hex.DecodeString(docVectors["proof1"])
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(append(append([]byte(nil), good...), 0))
	f.Add([]byte(ProofMagic))
	f.Add([]byte{})
	bad := append([]byte(nil), good...)
	bad[4] = 2 // version
	f.Add(bad)
	bad = append([]byte(nil), good...)
	bad[46] = 2 // side byte of the first step
	f.Add(bad)
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Proof
		if err := p.UnmarshalBinary(data); err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted proof does not re-encode: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", data, out)
		}
	})
}

func TestProofDecodeRejects(t *testing.T) {
	good, _ := hex.DecodeString(docVectors["proof1"])
	var p Proof
	if err := p.UnmarshalBinary(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(b []byte) []byte{
		"trailing":  func(b []byte) []byte { return append(b, 0) },
		"truncated": func(b []byte) []byte { return b[:len(b)-1] },
		"magic":     func(b []byte) []byte { b[0] = 'x'; return b },
		"version":   func(b []byte) []byte { b[4] = 9; return b },
		"side":      func(b []byte) []byte { b[46] = 2; return b },
		"index":     func(b []byte) []byte { copy(b[37:41], []byte{0, 0, 0, 3}); return b },
		"count0":    func(b []byte) []byte { copy(b[37:45], make([]byte, 8)); return b },
		"pathlen":   func(b []byte) []byte { b[45] = 33; return b },
	} {
		b := mod(append([]byte(nil), good...))
		if err := new(Proof).UnmarshalBinary(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
