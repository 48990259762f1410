package wallet

import (
	"context"

	"github.com/anchorchat/anchorchat/internal/btcrpc"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
)

// Chain is what the wallet needs from a full node. RPCChain implements it on
// btcd's JSON-RPC; unit tests use an in-memory fake.
type Chain interface {
	// BestHeight returns the height of the chain tip.
	BestHeight(ctx context.Context) (int32, error)
	// BlockHash returns the hash of the block at height on the best chain.
	BlockHash(ctx context.Context, height int32) (*chainhash.Hash, error)
	// Block returns a full block.
	Block(ctx context.Context, hash *chainhash.Hash) (*wire.MsgBlock, error)
	// Mempool returns the transactions in the node's mempool.
	Mempool(ctx context.Context) ([]*wire.MsgTx, error)
	// Broadcast submits a signed transaction.
	Broadcast(ctx context.Context, tx *wire.MsgTx) (*chainhash.Hash, error)
	// FeeRate returns the node's fee estimate for confirmation within
	// blocks, in satoshis per 1000 virtual bytes, or 0 if the node has none.
	FeeRate(ctx context.Context, blocks int) (btcutil.Amount, error)
}

// RPCChain is a Chain on btcd's RPC through rpcclient. rpcclient takes no
// context; each call runs in a goroutine and the context bounds the wait (the
// call itself is bounded by the client's HTTP timeout).
type RPCChain struct {
	Client *rpcclient.Client
}

// NewRPCChain wraps an rpcclient (HTTP POST mode is fine).
func NewRPCChain(c *rpcclient.Client) *RPCChain { return &RPCChain{Client: c} }

// BestHeight implements Chain.
func (c *RPCChain) BestHeight(ctx context.Context) (int32, error) {
	n, err := btcrpc.Call(ctx, "getblockcount", c.Client.GetBlockCount)
	return int32(n), err
}

// BlockHash implements Chain.
func (c *RPCChain) BlockHash(ctx context.Context, height int32) (*chainhash.Hash, error) {
	return btcrpc.Call(ctx, "getblockhash", func() (*chainhash.Hash, error) { return c.Client.GetBlockHash(int64(height)) })
}

// Block implements Chain.
func (c *RPCChain) Block(ctx context.Context, hash *chainhash.Hash) (*wire.MsgBlock, error) {
	return btcrpc.Call(ctx, "getblock", func() (*wire.MsgBlock, error) { return c.Client.GetBlock(hash) })
}

// Mempool implements Chain. A transaction that leaves the mempool between the
// two calls is skipped.
func (c *RPCChain) Mempool(ctx context.Context) ([]*wire.MsgTx, error) {
	hashes, err := btcrpc.Call(ctx, "getrawmempool", c.Client.GetRawMempool)
	if err != nil {
		return nil, err
	}
	txs := make([]*wire.MsgTx, 0, len(hashes))
	for _, h := range hashes {
		tx, err := btcrpc.Call(ctx, "getrawtransaction", func() (*btcutil.Tx, error) { return c.Client.GetRawTransaction(h) })
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			continue // mined or evicted meanwhile
		}
		txs = append(txs, tx.MsgTx())
	}
	return txs, nil
}

// Broadcast implements Chain.
func (c *RPCChain) Broadcast(ctx context.Context, tx *wire.MsgTx) (*chainhash.Hash, error) {
	return btcrpc.Call(ctx, "sendrawtransaction", func() (*chainhash.Hash, error) { return c.Client.SendRawTransaction(tx, false) })
}

// FeeRate implements Chain with btcd's estimatefee (BTC per kB). On regtest
// the estimator has no data and returns an error or a non-positive value:
// both mean "no estimate" (0), and the wallet then uses its floor.
func (c *RPCChain) FeeRate(ctx context.Context, blocks int) (btcutil.Amount, error) {
	v, err := btcrpc.Call(ctx, "estimatefee", func() (float64, error) { return c.Client.EstimateFee(int64(blocks)) })
	if err != nil {
		if ctx.Err() != nil {
			return 0, err
		}
		return 0, nil
	}
	if v <= 0 {
		return 0, nil
	}
	a, err := btcutil.NewAmount(v)
	if err != nil {
		return 0, nil
	}
	return a, nil
}
