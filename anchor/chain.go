package anchor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/anchorchat/anchorchat/internal/btcrpc"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
)

// ErrNotInChain is wrapped by a ChainSource's error when the source answered
// that it has no such block (an unknown hash, a height above its tip). Any
// other error is a failure of the source, and verification gives no
// verdict on it (a btcd outage must not make a genuine holder INVALID).
var ErrNotInChain = errors.New("not in the chain")

// ChainSource is what verification needs from a chain: headers and the best
// chain. Verify never trusts what it returns beyond that: it checks the
// header's hash and merkle root itself.
type ChainSource interface {
	// BlockHeader returns the header of the block with hash (any branch),
	// or an error wrapping ErrNotInChain if the source has no such block.
	BlockHeader(ctx context.Context, hash *chainhash.Hash) (*wire.BlockHeader, error)
	// BlockHash returns the hash of the best chain's block at height, or an
	// error wrapping ErrNotInChain if the best chain is not that long.
	BlockHash(ctx context.Context, height int32) (*chainhash.Hash, error)
	// BestHeight returns the height of the best chain's tip.
	BestHeight(ctx context.Context) (int32, error)
}

// BtcdChain is a ChainSource on btcd's JSON-RPC (getblockheader,
// getblockhash, getblockcount). rpcclient takes no context: each call runs
// in a goroutine and ctx bounds the wait.
type BtcdChain struct {
	Client *rpcclient.Client
}

// NewBtcdChain wraps an rpcclient.
func NewBtcdChain(c *rpcclient.Client) *BtcdChain { return &BtcdChain{Client: c} }

// BlockHeader implements ChainSource.
func (c *BtcdChain) BlockHeader(ctx context.Context, hash *chainhash.Hash) (*wire.BlockHeader, error) {
	h, err := btcrpc.Call(ctx, "getblockheader", func() (*wire.BlockHeader, error) { return c.Client.GetBlockHeader(hash) })
	return h, notInChain(err, btcjson.ErrRPCBlockNotFound)
}

// notInChain marks btcd's answer code (block not found, height out of
// range) as ErrNotInChain; other errors pass unchanged.
func notInChain(err error, code btcjson.RPCErrorCode) error {
	var re *btcjson.RPCError
	if errors.As(err, &re) && re.Code == code {
		return fmt.Errorf("%w: %w", ErrNotInChain, err)
	}
	return err
}

// BlockHash implements ChainSource.
func (c *BtcdChain) BlockHash(ctx context.Context, height int32) (*chainhash.Hash, error) {
	h, err := btcrpc.Call(ctx, "getblockhash", func() (*chainhash.Hash, error) { return c.Client.GetBlockHash(int64(height)) })
	return h, notInChain(err, btcjson.ErrRPCOutOfRange)
}

// BestHeight implements ChainSource.
func (c *BtcdChain) BestHeight(ctx context.Context) (int32, error) {
	n, err := btcrpc.Call(ctx, "getblockcount", c.Client.GetBlockCount)
	return int32(n), err
}

// MemoChain memoises a ChainSource for one verification pass: headers by
// hash, best-chain hashes by height and the best height are fetched once.
// Use a new one per pass (it does not notice a reorg or new blocks).
type MemoChain struct {
	src      ChainSource
	mu       sync.Mutex
	headers  map[chainhash.Hash]*wire.BlockHeader
	hashes   map[int32]*chainhash.Hash
	missing  map[any]error // ErrNotInChain answers, by hash or height: junk asks once
	best     int32
	haveBest bool
}

// NewMemoChain wraps src.
func NewMemoChain(src ChainSource) *MemoChain {
	return &MemoChain{src: src, headers: map[chainhash.Hash]*wire.BlockHeader{}, hashes: map[int32]*chainhash.Hash{}, missing: map[any]error{}}
}

// BlockHeader implements ChainSource.
func (m *MemoChain) BlockHeader(ctx context.Context, hash *chainhash.Hash) (*wire.BlockHeader, error) {
	m.mu.Lock()
	h, miss := m.headers[*hash], m.missing[*hash]
	m.mu.Unlock()
	if h != nil {
		return h, nil
	}
	if miss != nil {
		return nil, miss
	}
	h, err := m.src.BlockHeader(ctx, hash)
	if err != nil {
		m.noteMissing(*hash, err)
		return nil, err
	}
	m.mu.Lock()
	m.headers[*hash] = h
	m.mu.Unlock()
	return h, nil
}

// BlockHash implements ChainSource.
func (m *MemoChain) BlockHash(ctx context.Context, height int32) (*chainhash.Hash, error) {
	m.mu.Lock()
	h, miss := m.hashes[height], m.missing[height]
	m.mu.Unlock()
	if h != nil {
		return h, nil
	}
	if miss != nil {
		return nil, miss
	}
	h, err := m.src.BlockHash(ctx, height)
	if err != nil {
		m.noteMissing(height, err)
		return nil, err
	}
	m.mu.Lock()
	m.hashes[height] = h
	m.mu.Unlock()
	return h, nil
}

// noteMissing remembers a "no such block" answer (not a failure of the
// source, which the next ask may not repeat).
func (m *MemoChain) noteMissing(key any, err error) {
	if !errors.Is(err, ErrNotInChain) {
		return
	}
	m.mu.Lock()
	m.missing[key] = err
	m.mu.Unlock()
}

// BestHeight implements ChainSource.
func (m *MemoChain) BestHeight(ctx context.Context) (int32, error) {
	m.mu.Lock()
	if m.haveBest {
		defer m.mu.Unlock()
		return m.best, nil
	}
	m.mu.Unlock()
	b, err := m.src.BestHeight(ctx)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	m.best, m.haveBest = b, true
	m.mu.Unlock()
	return b, nil
}
