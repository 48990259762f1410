package anchor

import (
	"encoding/hex"
	"testing"

	"github.com/btcsuite/btcd/wire"
)

// TxRoot accepts exactly the anchor script protocol.md fixes, OP_RETURN
// OP_DATA_37 <payload> (6a 25 …, 39 bytes), and refuses every other
// encoding of the same payload: a PUSHDATA1 push, an opcode after the push
// or before it. It used to take any OP_RETURN script with one data push,
// so an implementation following the document could disagree with this
// one on which claim was anchored first.
func TestTxRootRequiresTheExactAnchorScript(t *testing.T) {
	var root Hash
	root[5] = 9
	p := Payload(root)
	tx := func(script []byte) *wire.MsgTx {
		m := wire.NewMsgTx(2)
		m.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, nil))
		m.AddTxOut(wire.NewTxOut(0, script))
		return m
	}
	canonical := append([]byte{0x6a, byte(PayloadLen)}, p...)
	if got, err := TxRoot(tx(canonical)); err != nil || got != root || len(canonical) != AnchorScriptLen {
		t.Fatalf("canonical script %x: %x %v", canonical, got, err)
	}
	for name, script := range map[string][]byte{
		"pushdata1":       append([]byte{0x6a, 0x4c, byte(PayloadLen)}, p...),
		"trailing OP_1":   append(append([]byte{0x6a, byte(PayloadLen)}, p...), 0x51),
		"trailing OP_NOP": append(append([]byte{0x6a, byte(PayloadLen)}, p...), 0x61),
		"leading OP_TRUE": append([]byte{0x6a, 0x51, byte(PayloadLen)}, p...),
		"short push":      append([]byte{0x6a, byte(PayloadLen - 1)}, p[:PayloadLen-1]...),
	} {
		if got, err := TxRoot(tx(script)); err == nil {
			t.Errorf("%s: non-canonical anchor script %s… accepted, root %x", name, hex.EncodeToString(script[:4]), got[:4])
		}
	}
}
