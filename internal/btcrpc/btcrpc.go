// Package btcrpc bounds btcd RPC calls with a context. btcd's rpcclient
// takes no context: the call runs in a goroutine and the context bounds the
// wait (the call itself is bounded by the client's HTTP timeout).
package btcrpc

import (
	"context"
	"fmt"
)

// Call runs f, an rpcclient call named what, until it returns or ctx ends.
// Errors are wrapped as "btcd <what>: ...".
func Call[T any](ctx context.Context, what string, f func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := f()
		ch <- res{v, err}
	}()
	select {
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("btcd %s: %w", what, ctx.Err())
	case r := <-ch:
		if r.err != nil {
			return r.v, fmt.Errorf("btcd %s: %w", what, r.err)
		}
		return r.v, nil
	}
}
