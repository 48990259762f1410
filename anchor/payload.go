package anchor

import (
	"bytes"
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

// AnchorScriptLen is the length of the one script an anchor output may
// have: OP_RETURN, OP_DATA_37, the 37-byte payload.
const AnchorScriptLen = 2 + PayloadLen

// TxRoot returns the root committed by tx. Exactly one of its outputs may
// start with OP_RETURN, and that output's script must be exactly
// OP_RETURN OP_DATA_37 <payload> (6a 25 …, AnchorScriptLen bytes): no other
// push encoding (OP_PUSHDATA1), no opcode before or after the push, so that
// every implementation following the protocol accepts the same
// transactions.
func TxRoot(tx *wire.MsgTx) (Hash, error) {
	var found []byte
	n := 0
	for _, out := range tx.TxOut {
		if len(out.PkScript) == 0 || out.PkScript[0] != txscript.OP_RETURN {
			continue
		}
		n++
		found = out.PkScript
	}
	if n != 1 {
		return Hash{}, fmt.Errorf("transaction has %d OP_RETURN outputs, an anchor has exactly 1", n)
	}
	if len(found) != AnchorScriptLen || found[1] != txscript.OP_DATA_37 {
		return Hash{}, fmt.Errorf("OP_RETURN output is not OP_RETURN OP_DATA_%d <payload> (%d bytes starting %x)",
			PayloadLen, len(found), found[:min(len(found), 3)])
	}
	return ParsePayload(found[2:])
}
