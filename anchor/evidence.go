package anchor

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/nbd-wtf/go-nostr"
)

// MaxEvidencePerHandle bounds what KeepEvidence stores for one handle. A
// verdict's evidence is a claim and its attestation per step of the
// holder's chain, so this holds a chain of 128 claims.
const MaxEvidencePerHandle = 256

// KeepEvidence stores a verdict's evidence (Verdict.Evidence) for handle in
// the batcher's store, so later verifications see it whatever relays
// return. Nothing is ever trusted for being kept: Verify checks kept
// events like any others.
//
// The newest verdict's evidence always fits: when the handle's rows would
// exceed MaxEvidencePerHandle, the oldest rows that are not part of it
// make room. That verdict was reached with every kept event in view, so
// what it leaves out lost to what it keeps (beyond the first
// MaxEvidencePerHandle events of one verdict, the rest is not kept). When
// every event is already kept, nothing is written.
func (b *Batcher) KeepEvidence(ctx context.Context, handle string, evts []*nostr.Event) error {
	if handle == "" || len(evts) == 0 {
		return nil
	}
	var want []*nostr.Event
	inWant := map[string]bool{}
	for _, e := range evts {
		if e != nil && !inWant[e.ID] && len(want) < MaxEvidencePerHandle {
			inWant[e.ID] = true
			want = append(want, e)
		}
	}
	missing := func(kept []string) []*nostr.Event {
		var out []*nostr.Event
		for _, e := range want {
			if !slices.Contains(kept, e.ID) {
				out = append(out, e)
			}
		}
		return out
	}
	kept, err := keptIDs(ctx, b.db, handle)
	if err != nil {
		return err
	}
	if len(missing(kept)) == 0 {
		return nil
	}

	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("anchor: keep evidence: %w", err)
	}
	defer tx.Rollback()
	// Read again inside the transaction: another verification may have
	// kept rows since.
	if kept, err = keptIDs(ctx, tx, handle); err != nil {
		return err
	}
	add := missing(kept)
	var others []string // kept rows outside this verdict's evidence, oldest first
	for _, id := range kept {
		if !inWant[id] {
			others = append(others, id)
		}
	}
	for _, id := range others[:min(len(others), max(0, len(kept)+len(add)-MaxEvidencePerHandle))] {
		if _, err := tx.ExecContext(ctx, `DELETE FROM evidence WHERE handle = ? AND id = ?`, handle, id); err != nil {
			return fmt.Errorf("anchor: keep evidence: %w", err)
		}
	}
	now := b.cfg.Now().Unix()
	for _, e := range add {
		pk := e.PubKey
		if e.Kind == KindAttestation {
			a, err := ParseAttestation(e)
			if err != nil {
				continue
			}
			pk = a.Claim.PubKey
		}
		raw, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("anchor: keep evidence: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO evidence (handle, id, pubkey, event, kept_at) VALUES (?, ?, ?, ?, ?)`,
			handle, e.ID, pk, string(raw), now); err != nil {
			return fmt.Errorf("anchor: keep evidence: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("anchor: keep evidence: %w", err)
	}
	return nil
}

// keptIDs lists the ids kept for handle, oldest first.
func keptIDs(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, handle string) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT id FROM evidence WHERE handle = ? ORDER BY kept_at, id`, handle)
	if err != nil {
		return nil, fmt.Errorf("anchor: keep evidence: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("anchor: keep evidence: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("anchor: keep evidence: %w", err)
	}
	return ids, nil
}

// Evidence returns the kept events for q: those of q.Handle, or, for a
// key query, of every handle whose kept claims the key signed.
func (b *Batcher) Evidence(ctx context.Context, q Query) (claims []*nostr.Event, atts []*Attestation, err error) {
	query, arg := `SELECT event FROM evidence WHERE handle = ?`, q.Handle
	if q.Handle == "" {
		query = `SELECT event FROM evidence WHERE handle IN (SELECT handle FROM evidence WHERE pubkey = ?)`
		arg = q.PubKey
	}
	rows, err := b.db.QueryContext(ctx, query, arg)
	if err != nil {
		return nil, nil, fmt.Errorf("anchor: evidence: %w", err)
	}
	defer rows.Close()
	var attEvts []*nostr.Event
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, nil, fmt.Errorf("anchor: evidence: %w", err)
		}
		e := new(nostr.Event)
		if err := json.Unmarshal([]byte(raw), e); err != nil {
			return nil, nil, fmt.Errorf("anchor: stored evidence: %w", err)
		}
		if e.Kind == KindAttestation {
			attEvts = append(attEvts, e)
		} else {
			claims = append(claims, e)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("anchor: evidence: %w", err)
	}
	atts, _ = ParseAttestations(attEvts)
	return claims, atts, nil
}
