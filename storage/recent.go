package storage

import "sync"

// recentIDs is the id index of the events stored since the writer last
// merged ids into the ids table (schema 4): every event whose seq is above
// ids_merged.seq is here and not in ids, and every other stored event is in
// ids. It lives in memory and is rebuilt from the events table at Open, so a
// new event's id costs a commit no page of a randomly keyed tree; the merge
// writes a few thousand ids into ids at once, in id order.
//
// Only the writer goroutine changes it: it adds a transaction's ids after
// the COMMIT, and empties it after the COMMIT of a merge. A reader looks ids
// up here before its statement starts, so whichever side of a merge it
// reads, the statement's snapshot is at least as new: an id is found here
// (its row committed) or in ids.
//
// An entry can outlive its event (deleted since), never point at another
// event's row: seqs are not reused while the map lives (writer.tx), and
// every lookup checks the row's id as well.
type recentIDs struct {
	mu sync.RWMutex
	m  map[[32]byte]int64 // id → seq
}

func newRecentIDs() *recentIDs {
	return &recentIDs{m: make(map[[32]byte]int64)}
}

// get returns the seq recorded for id.
func (r *recentIDs) get(id []byte) (int64, bool) {
	if len(id) != 32 {
		return 0, false
	}
	r.mu.RLock()
	seq, ok := r.m[[32]byte(id)]
	r.mu.RUnlock()
	return seq, ok
}

// seqs appends to dst the seqs recorded for ids.
func (r *recentIDs) seqs(ids [][]byte, dst []int64) []int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.m) == 0 {
		return dst
	}
	for _, id := range ids {
		if len(id) != 32 {
			continue
		}
		if seq, ok := r.m[[32]byte(id)]; ok {
			dst = append(dst, seq)
		}
	}
	return dst
}

// add records the committed ids of one transaction.
func (r *recentIDs) add(ids map[[32]byte]int64) {
	if len(ids) == 0 {
		return
	}
	r.mu.Lock()
	for id, seq := range ids {
		r.m[id] = seq
	}
	r.mu.Unlock()
}

// reset forgets every id: they have been merged into ids.
func (r *recentIDs) reset() {
	r.mu.Lock()
	r.m = make(map[[32]byte]int64)
	r.mu.Unlock()
}

// len is how many ids are recorded (stale ones included).
func (r *recentIDs) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}
