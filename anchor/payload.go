package anchor

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// The anchor output: OP_RETURN <37 bytes> = Tag (4 ASCII bytes "ACHT") ||
// Version (1 byte) || root (32 bytes).
const (
	Tag        = "ACHT"
	Version    = 1
	PayloadLen = len(Tag) + 1 + 32
)

// Payload is the OP_RETURN data committing root.
func Payload(root Hash) []byte {
	b := make([]byte, 0, PayloadLen)
	b = append(b, Tag...)
	b = append(b, Version)
	return append(b, root[:]...)
}

// ParsePayload returns the root in an anchor payload.
func ParsePayload(data []byte) (Hash, error) {
	if len(data) != PayloadLen || !bytes.Equal(data[:len(Tag)], []byte(Tag)) {
		return Hash{}, fmt.Errorf("not an anchor payload (want %d bytes starting %q)", PayloadLen, Tag)
	}
	if v := data[len(Tag)]; v != Version {
		return Hash{}, fmt.Errorf("anchor payload version %d, this implementation knows %d", v, Version)
	}
	var h Hash
	copy(h[:], data[len(Tag)+1:])
	return h, nil
}

// TxRoot returns the root committed by tx: its one OP_RETURN output must be
// an anchor payload.
func TxRoot(tx *wire.MsgTx) (Hash, error) {
	var found []byte
	n := 0
	for _, out := range tx.TxOut {
		if len(out.PkScript) == 0 || out.PkScript[0] != txscript.OP_RETURN {
			continue
		}
		n++
		pushes, err := txscript.PushedData(out.PkScript)
		if err != nil || len(pushes) != 1 {
			return Hash{}, errors.New("OP_RETURN output is not a single data push")
		}
		found = pushes[0]
	}
	if n != 1 {
		return Hash{}, fmt.Errorf("transaction has %d OP_RETURN outputs, an anchor has exactly 1", n)
	}
	return ParsePayload(found)
}
