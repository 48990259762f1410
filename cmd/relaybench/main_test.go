package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The benchmark's measures, run small against a real relay on a real SQLite
// file: each must count what it claims to count. They are not timed.

func TestIngestCountsEveryOK(t *testing.T) {
	ctx := context.Background()
	srv, err := startRelay(ctx, filepath.Join(t.TempDir(), "ingest.db"), "FULL")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	const n = 3000
	res, err := ingest(ctx, srv.url, srv.owner, n, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	st, err := srv.store.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.n != n || st.Events != n {
		t.Fatalf("ingest accepted %d and the store holds %d, want %d", res.n, st.Events, n)
	}
	if res.rate <= 0 || res.p50 <= 0 || res.p99 < res.p50 || res.usage.cpu() <= 0 {
		t.Fatalf("implausible result: rate %.0f, p50 %v, p99 %v, CPU %v", res.rate, res.p50, res.p99, res.usage.cpu())
	}
}

func TestQueriesAndFanout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fill, err := fillStore(ctx, filepath.Join(dir, "query.db"), 3000)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startRelay(ctx, filepath.Join(dir, "query.db"), "NORMAL")
	if err != nil {
		t.Fatal(err)
	}
	qs, err := queries(ctx, srv.url, fill, 20)
	srv.close()
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 8 {
		t.Fatalf("%d query shapes, want 8", len(qs))
	}
	for _, q := range qs {
		if q.p50 <= 0 || q.p99 < q.p50 {
			t.Errorf("%s: p50 %v, p99 %v", q.name, q.p50, q.p99)
		}
		// Every other shape asks for events the store holds: 3 per
		// author, 60 % of them kind 1; ids sampled from the store.
		if nothing := strings.HasSuffix(q.name, "nothing stored"); nothing != (q.avgResults == 0) {
			t.Errorf("%s: %.1f results on average", q.name, q.avgResults)
		}
		if strings.HasPrefix(q.name, "follow list: 500") && q.avgResults < 100 {
			t.Errorf("%s: %.1f results on average, want the limit (100)", q.name, q.avgResults)
		}
	}

	srv, err = startRelay(ctx, filepath.Join(dir, "fanout.db"), "NORMAL")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	fo, err := fanout(ctx, srv.url, srv.owner, 50, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if fo.expected != 50*10 || fo.missed != 0 || fo.p50 <= 0 || fo.p99 < fo.p50 || fo.p99 > time.Minute {
		t.Fatalf("fanout: %+v, want 500 deliveries, none missed", fo)
	}
}

func TestParseOK(t *testing.T) {
	id := strings.Repeat("ab", 32)
	for _, c := range []struct {
		frame          string
		accepted, isOK bool
	}{
		{`["OK","` + id + `",true,""]`, true, true},
		{`["OK","` + id + `",false,"blocked: no"]`, false, true},
		{`["OK", "` + id + `", true, ""]`, true, true}, // not the fast layout: decoded
		{`["NOTICE","hi"]`, false, false},
		{`not json`, false, false},
	} {
		gotID, accepted, isOK := parseOK([]byte(c.frame))
		if isOK != c.isOK || accepted != c.accepted || (isOK && gotID != id) {
			t.Errorf("parseOK(%s) = %q, %v, %v", c.frame, gotID, accepted, isOK)
		}
	}
}

func TestSendOrder(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	s := newSendOrder(len(ids), func(k int) string { return ids[k] })
	for _, c := range []struct {
		id   string
		want int
		ok   bool
	}{
		{"a", 0, true},
		{"c", 2, true}, // out of order: found by the scan
		{"b", 1, true},
		{"c", 0, false}, // twice
		{"x", 0, false}, // never sent
		{"e", 4, true},
		{"d", 3, true},
		{"a", 0, false},
	} {
		k, ok := s.ack(c.id)
		if ok != c.ok || (ok && k != c.want) {
			t.Errorf("ack(%q) = %d, %v; want %d, %v", c.id, k, ok, c.want, c.ok)
		}
	}
	if s.head != len(ids) {
		t.Fatalf("head %d after every event was acknowledged, want %d", s.head, len(ids))
	}
}
