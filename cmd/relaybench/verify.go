package main

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/nbd-wtf/go-nostr"
)

// verifyRate is how many events par goroutines check (id and BIP-340
// signature, with the relay's verifier) per second. With freshKeys, the 1,024
// events have 1,024 authors and the verifier keeps no parsed key, so every
// check lifts its public key onto the curve; otherwise one author signs them
// all, as in the ingest measure.
func verifyRate(d time.Duration, par int, freshKeys bool) float64 {
	keys := []keypair{newKey()}
	cache := 0 // default size
	if freshKeys {
		keys = make([]keypair, 1024)
		for i := range keys {
			keys[i] = newKey()
		}
		cache = 1
	}
	evts := signAll(1024, func(i int) nostr.Event {
		return nostr.Event{Kind: 1, Content: fmt.Sprintf("verify %d", i), CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", ownerKey.pk}}}
	}, keys...)
	v := eventsig.New(cache)
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for time.Since(start) < d {
				for i := range evts {
					if err := v.Check(&evts[i]); err != nil {
						panic(err)
					}
				}
				n += len(evts)
			}
			total.Add(int64(n))
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds()
}

// signAll builds n events with make and signs them with k on every core.
func signAll(n int, make func(i int) nostr.Event, keys ...keypair) []nostr.Event {
	out := nostrEvents(n)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				out[i] = make(i)
				if err := out[i].Sign(keys[i%len(keys)].sk); err != nil {
					panic(err)
				}
			}
		}(w)
	}
	wg.Wait()
	return out
}

func nostrEvents(n int) []nostr.Event { return make([]nostr.Event, n) }
