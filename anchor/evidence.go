package anchor

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nbd-wtf/go-nostr"
)

// MaxEvidencePerHandle bounds what KeepEvidence stores for one handle; a
// holder's chain and the anchored claims of a handle are far fewer.
const MaxEvidencePerHandle = 256

// KeepEvidence stores a verdict's evidence (Verdict.Evidence) for handle in
// the batcher's store, so later verifications see it whatever relays
// return. Events already kept are skipped; nothing is ever trusted for
// being kept: Verify checks kept events like any others.
func (b *Batcher) KeepEvidence(ctx context.Context, handle string, evts []*nostr.Event) error {
	if handle == "" || len(evts) == 0 {
		return nil
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("anchor: keep evidence: %w", err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM evidence WHERE handle = ?`, handle).Scan(&n); err != nil {
		return fmt.Errorf("anchor: keep evidence: %w", err)
	}
	now := b.cfg.Now().Unix()
	for _, e := range evts {
		if n >= MaxEvidencePerHandle {
			break
		}
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
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO evidence (handle, id, pubkey, event, kept_at) VALUES (?, ?, ?, ?, ?)`,
			handle, e.ID, pk, string(raw), now)
		if err != nil {
			return fmt.Errorf("anchor: keep evidence: %w", err)
		}
		if k, _ := res.RowsAffected(); k > 0 {
			n++
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("anchor: keep evidence: %w", err)
	}
	return nil
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
