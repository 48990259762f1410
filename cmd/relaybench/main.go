// Command relaybench measures the anchorchat relay on this machine, in one run:
//
//	(a) ingest of pre-signed events over concurrent pipelined connections:
//	    events/s accepted and OK latency p50/p99;
//	(b) REQ time-to-EOSE p50/p99 for author+kind, #p and ids filters on a
//	    store of --store events;
//	(c) delivery latency p50/p99 of a new event to --subs open subscriptions,
//	    and how many deliveries were missed;
//	(d) the single-core BIP-340 verify rate of the verifier this build uses
//	    (for a known author and for a new one), the bound for (a), and the
//	    rate measured with both cores verifying at once.
//
// It starts a real node relay on a real SQLite file on loopback and drives
// it over websockets, in a process set up as the node's is (its timer slack,
// internal/timerslack, ANCHORCHAT_TIMER_SLACK). Build it as the node is built:
//
//	go run -tags libsecp256k1 ./cmd/relaybench
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/anchorchat/anchorchat/internal/timerslack"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

type options struct {
	ingestEvents int
	conns        int
	storeEvents  int
	queries      int
	subs         int
	fanoutEvents int
	dir          string
	sync         string
	window       int
	rate         int
	cpuprofile   string
	memprofile   string
	trace        string
	only         string
	markdown     bool
}

func main() {
	var o options
	flag.IntVar(&o.ingestEvents, "ingest", 200_000, "events published in the ingest test (a)")
	flag.IntVar(&o.conns, "conns", 8, "concurrent publishing connections in (a)")
	flag.IntVar(&o.storeEvents, "store", 1_000_000, "events in the store for the query test (b)")
	flag.IntVar(&o.queries, "queries", 2000, "REQs per filter shape in (b)")
	flag.IntVar(&o.subs, "subs", 1000, "open subscriptions in (c)")
	flag.IntVar(&o.fanoutEvents, "fanout", 200, "events published to the subscriptions in (c)")
	flag.StringVar(&o.dir, "dir", "", "directory for the SQLite files (default: a temp dir, removed after); a store file of the right size found there is reused for (b)")
	flag.StringVar(&o.sync, "sync", "FULL", "SQLite synchronous mode for the relay: FULL or NORMAL")
	flag.IntVar(&o.window, "window", 256, "unacknowledged EVENTs each connection keeps in flight in (a)")
	flag.IntVar(&o.rate, "rate", 20, "events per second published to the subscriptions in (c)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&o.trace, "trace", "", "write a runtime execution trace of the whole run to this file (go tool trace)")
	flag.StringVar(&o.memprofile, "memprofile", "", "write an allocation profile of the whole run to this file")
	flag.StringVar(&o.only, "only", "abcd", "which measures to run (letters of a, b, c, d)")
	flag.BoolVar(&o.markdown, "markdown", false, "print the results as a Markdown table")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

type result struct{ name, value string }

func run(o options) error {
	ctx := context.Background()
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	if o.memprofile != "" {
		defer func() {
			if f, err := os.Create(o.memprofile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if o.dir != "" {
		if err := os.MkdirAll(o.dir, 0o700); err != nil {
			return fmt.Errorf("--dir: %w", err)
		}
	} else {
		d, err := os.MkdirTemp("", "relaybench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	var results []result
	add := func(name, format string, args ...any) {
		r := result{name, fmt.Sprintf(format, args...)}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "  %-58s %s\n", r.name, r.value)
	}
	// The node's timer slack, set the same way here (the package's import).
	slack, _, err := timerslack.Status()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "relaybench: %d CPUs, GOMAXPROCS %d, verifier %s, %s, timer slack %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), eventsig.Backend(), runtime.Version(), slack)

	// (d) first: it is the bound for (a). The relay's verifier
	// (internal/eventsig) keeps parsed public keys, so a known author costs
	// less than a new one; (a) publishes as one author, so its bound is the
	// known-author rate.
	if strings.Contains(o.only, "d") {
		known := verifyRate(2*time.Second, 1, false)
		fresh := verifyRate(2*time.Second, 1, true)
		two := verifyRate(2*time.Second, 2, false)
		add("(d) BIP-340 verify (id + signature), one core, known author", "%.0f /s", known)
		add("(d) BIP-340 verify (id + signature), one core, new author each time", "%.0f /s", fresh)
		add("(d) two-core verify bound (2 × one core, known author); half of it", "%.0f /s; %.0f /s", 2*known, known)
		add("(d) measured on two cores at once (2 goroutines), known author", "%.0f /s", two)
	}
	if strings.Contains(o.only, "a") {
		if err := benchIngest(ctx, o, add); err != nil {
			return err
		}
	}
	if strings.Contains(o.only, "b") {
		// Collect what (a) left behind (its signed events and frames, a few
		// hundred MB) now, not during the timed queries.
		runtime.GC()
		if err := benchQueries(ctx, o, add); err != nil {
			return err
		}
	}
	if strings.Contains(o.only, "c") {
		runtime.GC()
		if err := benchFanout(ctx, o, add); err != nil {
			return err
		}
	}
	if o.markdown {
		fmt.Println("| measure | result |")
		fmt.Println("|---|---|")
		for _, r := range results {
			fmt.Printf("| %s | %s |\n", r.name, r.value)
		}
	}
	return nil
}

type addFunc func(name, format string, args ...any)

func benchIngest(ctx context.Context, o options, add addFunc) error {
	srv, err := startRelay(ctx, freshDB(filepath.Join(o.dir, "ingest.db")), o.sync)
	if err != nil {
		return err
	}
	ing, err := ingest(ctx, srv.url, srv.owner, o.ingestEvents, o.conns, o.window)
	stats, _ := srv.store.Stats(ctx)
	srv.close()
	if err != nil {
		return err
	}
	if stats.Commits > 0 {
		add("(a) group commit: events per transaction", "%.0f (%d transactions)", float64(stats.Requests)/float64(stats.Commits), stats.Commits)
	}
	add(fmt.Sprintf("(a) ingest, %d conns, %d in flight each, db.sync %s: accepted", o.conns, o.window, o.sync), "%.0f events/s (%d events)", ing.rate, ing.n)
	add("(a) OK latency p50 / p99", "%s / %s", ms(ing.p50), ms(ing.p99))
	u, n := ing.usage, float64(ing.n)
	perEvent := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 / n }
	add("(a) CPU per accepted event (relay and clients, user + system)", "%.1f µs (%.1f + %.1f)", perEvent(u.cpu()), perEvent(u.user), perEvent(u.sys))
	elapsed := n / ing.rate
	add("(a) cores busy while the events went in (CPU time ÷ wall time)", "%.2f of %d", u.cpu().Seconds()/elapsed, runtime.NumCPU())
	add("(a) per 1,000 events: minor page faults; context switches (voluntary + involuntary)", "%.0f; %.0f + %.0f",
		float64(u.minflt)*1000/n, float64(u.nvcsw)*1000/n, float64(u.nivcsw)*1000/n)
	return nil
}

func benchQueries(ctx context.Context, o options, add addFunc) error {
	qdb := filepath.Join(o.dir, fmt.Sprintf("query-%d.db", o.storeEvents))
	fill, err := fillStore(ctx, qdb, o.storeEvents)
	if err != nil {
		return err
	}
	srv, err := startRelay(ctx, qdb, o.sync)
	if err != nil {
		return err
	}
	qs, err := queries(ctx, srv.url, fill, o.queries)
	if err != nil {
		srv.close()
		return err
	}
	for _, q := range qs {
		add(fmt.Sprintf("(b) REQ→EOSE %s, %d events stored", q.name, o.storeEvents), "p50 %s, p99 %s (%.1f results avg)", ms(q.p50), ms(q.p99), q.avgResults)
	}
	srv.close()
	return nil
}

func benchFanout(ctx context.Context, o options, add addFunc) error {
	srv, err := startRelay(ctx, freshDB(filepath.Join(o.dir, "fanout.db")), o.sync)
	if err != nil {
		return err
	}
	fo, err := fanout(ctx, srv.url, srv.owner, o.subs, o.fanoutEvents, o.rate)
	srv.close()
	if err != nil {
		return err
	}
	add(fmt.Sprintf("(c) delivery to %d subscriptions, %d events at %d/s", o.subs, o.fanoutEvents, o.rate), "p50 %s, p99 %s, missed %d of %d", ms(fo.p50), ms(fo.p99), fo.missed, fo.expected)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return percentile(d, 0.50), percentile(d, 0.99)
}

type relayServer struct {
	url   string
	owner keypair
	store *storage.Store
	close func()
}

type keypair struct{ sk, pk string }

func newKey() keypair {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	return keypair{sk, pk}
}

// ownerKey is fixed across runs so a reused query store still belongs to the owner.
var ownerKey = func() keypair {
	sk := "5c0c523f52a5b6fad39ed2403092df8cebc36318b39383bca6c00808626fab3a"
	pk, _ := nostr.GetPublicKey(sk)
	return keypair{sk, pk}
}()

// freshDB removes a benchmark's SQLite file (and its WAL) from an earlier run.
func freshDB(path string) string {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(path + suffix)
	}
	return path
}

// startRelay runs a relay the way the node does, with the limits a benchmark needs lifted.
func startRelay(ctx context.Context, path, sync string) (*relayServer, error) {
	log := slog.New(slog.DiscardHandler)
	st, err := storage.Open(ctx, storage.Options{Path: path, Synchronous: sync, Logger: log})
	if err != nil {
		return nil, err
	}
	cfg := relay.DefaultConfig()
	cfg.Owner = ownerKey.pk
	l := &cfg.Limits
	l.EventsPerSecondPerIP, l.EventsPerSecondPerPubkey, l.ReqsPerSecondPerIP, l.MaxConnectionsPerIP = 0, 0, 0, 0
	r := relay.New(cfg, st, log, nil)
	r.Start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: r}
	go srv.Serve(ln)
	return &relayServer{
		url:   "ws://" + ln.Addr().String(),
		owner: ownerKey,
		store: st,
		close: func() {
			_ = srv.Close()
			r.Close()
			_ = st.Close()
		},
	}, nil
}
