package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// verifyRate is how many BIP-340 signatures one goroutine (one core) checks per second.
func verifyRate(d time.Duration) float64 {
	k := newKey()
	evts := signAll(1024, func(i int) nostr.Event {
		return nostr.Event{Kind: 1, Content: fmt.Sprintf("verify %d", i), CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", k.pk}}, PubKey: k.pk}
	}, k)
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		for i := range evts {
			if ok, _ := evts[i].CheckSignature(); !ok {
				panic("bad signature")
			}
		}
		n += len(evts)
	}
	return float64(n) / time.Since(start).Seconds()
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
