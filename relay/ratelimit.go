package relay

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (an IP or a pubkey). Buckets idle
// long enough to be full again are forgotten, so memory stays bounded by the
// number of recently active keys.
type keyedLimiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newKeyedLimiter(perSecond float64, burst int) *keyedLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &keyedLimiter{rate: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*bucket)}
}

// allow takes one token from key's bucket. A nil limiter allows everything.
func (k *keyedLimiter) allow(key string, now time.Time) bool {
	if k == nil {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.swept) > time.Minute {
		k.sweep(now)
	}
	b := k.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(k.rate, k.burst)}
		k.buckets[key] = b
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

// sweep forgets buckets that have refilled completely since their last use.
func (k *keyedLimiter) sweep(now time.Time) {
	k.swept = now
	full := time.Duration(float64(k.burst)/float64(k.rate)*float64(time.Second)) + time.Second
	for key, b := range k.buckets {
		if now.Sub(b.last) > full {
			delete(k.buckets, key)
		}
	}
}
