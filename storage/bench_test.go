package storage

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// Benchmarks. Fill size for the BenchmarkQuery* store comes from
// ANCHORCHAT_BENCH_EVENTS (default 20000); 1000000 works (signing dominates
// the fill: about a minute on 2 cores).
//
//	ANCHORCHAT_BENCH_EVENTS=1000000 go test -tags libsecp256k1 -bench . -run '^$' ./storage/

func benchEventsN() int {
	if v := os.Getenv("ANCHORCHAT_BENCH_EVENTS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 20000
}

var benchTmp string

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTmp != "" {
		os.RemoveAll(benchTmp)
	}
	os.Exit(code)
}

// benchKeys are generated once; signing cost does not depend on the key.
type benchKeys struct {
	authors    []key
	recipients []key
}

func makeBenchKeys(nAuthors, nRecipients int) benchKeys {
	gen := func(n int) []key {
		out := make([]key, n)
		for i := range out {
			sk := nostr.GeneratePrivateKey()
			pk, _ := nostr.GetPublicKey(sk)
			out[i] = key{sk, pk}
		}
		return out
	}
	return benchKeys{gen(nAuthors), gen(nRecipients)}
}

// benchEvent builds and signs event number i: 80% kind 1, 10% kind 7, 10%
// kind 1059 gift wraps; each has a "p" tag, most an "e" and a "t" tag.
func (bk benchKeys) benchEvent(i int, now int64) *nostr.Event {
	r := rand.New(rand.NewPCG(uint64(i), 42))
	a := bk.authors[r.IntN(len(bk.authors))]
	p := bk.recipients[r.IntN(len(bk.recipients))]
	kind := 1
	switch x := r.IntN(10); x {
	case 0:
		kind = 7
	case 1:
		kind = 1059
	}
	tags := nostr.Tags{{"p", p.pk}}
	if kind != 1059 {
		var ref [32]byte
		for j := range ref {
			ref[j] = byte(r.Uint32())
		}
		tags = append(tags, nostr.Tag{"e", fmt.Sprintf("%x", ref)}, nostr.Tag{"t", "topic" + strconv.Itoa(r.IntN(50))})
	}
	e := &nostr.Event{
		PubKey: a.pk,
		// events arrive roughly in time order: ~20 per second, a few seconds of jitter
		CreatedAt: nostr.Timestamp(now - int64(i/20) - int64(r.IntN(5))),
		Kind:      kind,
		Tags:      tags,
		Content:   "benchmark event number " + strconv.Itoa(i) + " with a little text in it",
	}
	if err := e.Sign(a.sk); err != nil {
		panic(err)
	}
	return e
}

// signMany signs n events with all cores, calling emit from the workers.
func (bk benchKeys) signMany(from, n int, now int64, emit func(i int, e *nostr.Event)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	next.Store(int64(from))
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= from+n {
					return
				}
				emit(i, bk.benchEvent(i, now))
			}
		}()
	}
	wg.Wait()
}

func BenchmarkSaveBatch(b *testing.B)       { benchSave(b, "FULL") }
func BenchmarkSaveBatchNormal(b *testing.B) { benchSave(b, "NORMAL") }

func benchSave(b *testing.B, syncMode string) {
	bk := makeBenchKeys(200, 200)
	now := time.Now().Unix()
	evts := make([]*nostr.Event, b.N)
	bk.signMany(0, b.N, now, func(i int, e *nostr.Event) { evts[i] = e })
	s, _, _ := openTest(b, func(o *Options) { o.Now = time.Now; o.Synchronous = syncMode })
	b.ResetTimer()
	el := saveConcurrently(b, s, evts)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	if st, err := s.Stats(context.Background()); err == nil && st.Commits > 0 {
		b.ReportMetric(float64(st.Requests)/float64(st.Commits), "events/commit")
	}
}

// BenchmarkSaveAfterFill saves into a store already holding
// ANCHORCHAT_BENCH_EVENTS events: what the writer costs once the id index is
// large (each id merge rewrites most of it). The events are not signed (the
// store leaves that to the relay), so the fill takes seconds, not minutes.
func BenchmarkSaveAfterFill(b *testing.B) {
	s, _, _ := openTest(b, func(o *Options) { o.Now = time.Now; o.Synchronous = "FULL" })
	pk := nostr.GeneratePrivateKey() // any 64 hex digits
	sig := strings.Repeat("00", 64)
	now := nostr.Now()
	unsigned := func(from, n int) []*nostr.Event {
		evts := make([]*nostr.Event, n)
		var id [32]byte
		for i := range evts {
			for j := 0; j < 32; j += 8 {
				binary.LittleEndian.PutUint64(id[j:], rand.Uint64())
			}
			evts[i] = &nostr.Event{ID: hex.EncodeToString(id[:]), PubKey: pk, Sig: sig, Kind: 1, CreatedAt: now,
				Content: fmt.Sprintf("unsigned event %d, about as long as a short note", from+i), Tags: nostr.Tags{{"p", pk}, {"t", "fill"}}}
		}
		return evts
	}
	fill := benchEventsN()
	for done := 0; done < fill; done += 100000 {
		saveConcurrently(b, s, unsigned(done, min(100000, fill-done)))
	}
	evts := unsigned(fill, b.N)
	b.ResetTimer()
	el := saveConcurrently(b, s, evts)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
}

// saveConcurrently saves evts through SaveAsync from 4 producers and returns
// how long they took to be committed.
func saveConcurrently(b *testing.B, s *Store, evts []*nostr.Event) time.Duration {
	var wg sync.WaitGroup
	var failed atomic.Int64
	const producers = 4
	start := time.Now()
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine sync.WaitGroup
			for i := p; i < len(evts); i += producers {
				mine.Add(1)
				s.SaveAsync(evts[i], func(err error) {
					if err != nil {
						failed.Add(1)
					}
					mine.Done()
				})
			}
			mine.Wait()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if failed.Load() != 0 {
		b.Fatalf("%d saves failed", failed.Load())
	}
	return el
}

// benchStore is the shared pre-filled store for the query benchmarks.
type benchStore struct {
	s          *Store
	bk         benchKeys
	sampleIDs  []string
	n          int
	fillRate   float64
	fillTime   time.Duration
	sizeBytes  int64
	privateVis Visibility
}

var (
	benchOnce sync.Once
	benchSt   *benchStore
	benchErr  error
)

func getBenchStore(b *testing.B) *benchStore {
	benchOnce.Do(func() {
		n := benchEventsN()
		dir, err := os.MkdirTemp("", "anchorchat-storage-bench-")
		if err != nil {
			benchErr = err
			return
		}
		benchTmp = dir
		s, err := Open(context.Background(), Options{
			Path: filepath.Join(dir, "bench.db"), MaxBatch: 4096, Logger: quietLogger(),
		})
		if err != nil {
			benchErr = err
			return
		}
		nAuthors := max(100, n/500) // ~500 events per author
		bk := makeBenchKeys(nAuthors, nAuthors)
		bs := &benchStore{s: s, bk: bk, n: n}
		now := time.Now().Unix()
		var mu sync.Mutex
		var failed atomic.Int64
		var pending sync.WaitGroup
		start := time.Now()
		bk.signMany(0, n, now, func(i int, e *nostr.Event) {
			if i%97 == 0 {
				mu.Lock()
				bs.sampleIDs = append(bs.sampleIDs, e.ID)
				mu.Unlock()
			}
			pending.Add(1)
			s.SaveAsync(e, func(err error) {
				if err != nil {
					failed.Add(1)
				}
				pending.Done()
			})
		})
		pending.Wait()
		bs.fillTime = time.Since(start)
		bs.fillRate = float64(n) / bs.fillTime.Seconds()
		if failed.Load() > 0 {
			benchErr = fmt.Errorf("%d fill saves failed", failed.Load())
			return
		}
		if _, err := s.w.conn.ExecContext(context.Background(), "PRAGMA optimize"); err != nil {
			benchErr = err
			return
		}
		st, err := s.Stats(context.Background())
		if err != nil {
			benchErr = err
			return
		}
		bs.sizeBytes = st.SizeBytes
		bs.privateVis = Visibility{PrivateKinds: []int{4, 1059}}
		fmt.Fprintf(os.Stderr, "bench store: %d events (%d stored), %.1f MB, filled in %v (%.0f events/s incl. signing)\n",
			n, st.Events, float64(st.SizeBytes)/1e6, bs.fillTime.Round(time.Millisecond), bs.fillRate)
		benchSt = bs
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchSt
}

// runQueryBench times one QueryRaw per iteration and reports p50/p99.
func runQueryBench(b *testing.B, mk func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility)) {
	bs := getBenchStore(b)
	r := rand.New(rand.NewPCG(1, 2))
	lat := make([]time.Duration, 0, b.N)
	var rowsTotal, bytesTotal int64
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, v := mk(r, bs)
		t0 := time.Now()
		err := bs.s.QueryRaw(ctx, f, v, func(raw []byte) error {
			rowsTotal++
			bytesTotal += int64(len(raw))
			return nil
		})
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50_µs")
	b.ReportMetric(pct(0.99), "p99_µs")
	b.ReportMetric(float64(rowsTotal)/float64(b.N), "events/op")
	b.ReportMetric(float64(bs.n), "store_events")
}

func BenchmarkQueryAuthorsKinds(b *testing.B) {
	runQueryBench(b, func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility) {
		a := bs.bk.authors
		return nostr.Filter{
			Authors: []string{a[r.IntN(len(a))].pk, a[r.IntN(len(a))].pk, a[r.IntN(len(a))].pk},
			Kinds:   []int{1, 7},
			Limit:   500,
		}, bs.privateVis
	})
}

func BenchmarkQuerySingleAuthorKind(b *testing.B) {
	runQueryBench(b, func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility) {
		a := bs.bk.authors
		return nostr.Filter{Authors: []string{a[r.IntN(len(a))].pk}, Kinds: []int{1}, Limit: 500}, bs.privateVis
	})
}

func BenchmarkQueryTagP(b *testing.B) {
	// the inbox query: everything p-tagging me, including my gift wraps
	runQueryBench(b, func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility) {
		p := bs.bk.recipients[r.IntN(len(bs.bk.recipients))].pk
		return nostr.Filter{Tags: nostr.TagMap{"p": {p}}, Limit: 500},
			Visibility{PrivateKinds: []int{4, 1059}, Readers: []string{p}}
	})
}

func BenchmarkQueryGiftWrapsForMe(b *testing.B) {
	runQueryBench(b, func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility) {
		p := bs.bk.recipients[r.IntN(len(bs.bk.recipients))].pk
		return nostr.Filter{Kinds: []int{1059}, Tags: nostr.TagMap{"p": {p}}, Limit: 500},
			Visibility{PrivateKinds: []int{4, 1059}, Readers: []string{p}}
	})
}

func BenchmarkQueryIDs(b *testing.B) {
	runQueryBench(b, func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility) {
		ids := make([]string, 100)
		for i := range ids {
			ids[i] = bs.sampleIDs[r.IntN(len(bs.sampleIDs))]
		}
		return nostr.Filter{IDs: ids, Limit: 500}, bs.privateVis
	})
}

func BenchmarkQueryRecentGlobal(b *testing.B) {
	runQueryBench(b, func(r *rand.Rand, bs *benchStore) (nostr.Filter, Visibility) {
		return nostr.Filter{Kinds: []int{1}, Limit: 100}, bs.privateVis
	})
}

func BenchmarkCountTagP(b *testing.B) {
	bs := getBenchStore(b)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < b.N; i++ {
		p := bs.bk.recipients[r.IntN(len(bs.bk.recipients))].pk
		if _, err := bs.s.Count(context.Background(), nostr.Filter{Tags: nostr.TagMap{"p": {p}}}, Visibility{}); err != nil {
			b.Fatal(err)
		}
	}
}
