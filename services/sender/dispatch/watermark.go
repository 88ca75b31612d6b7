package dispatch

// watermark tracks the records of one partition that were taken but are not
// finished, to find the offset that may be committed: the lowest unfinished
// record, or the offset after the last record when all are finished.
// Records are taken in offset order and finish in any order; offsets may
// skip (transaction markers occupy offsets too), so the entries are kept as
// a sorted queue rather than assumed contiguous.
type watermark struct {
	offsets []int64
	done    []bool
	head    int   // entries before head are finished and forgotten
	next    int64 // the offset after the last record taken; -1 before any
}

func newWatermark() watermark { return watermark{next: -1} }

// take records that offset is being worked on. Offsets must increase.
func (w *watermark) take(offset int64) {
	w.offsets = append(w.offsets, offset)
	w.done = append(w.done, false)
	w.next = offset + 1
}

// finish records that offset is done. It is a no-op for an offset not taken
// (or already forgotten), so a stale completion cannot move the mark.
func (w *watermark) finish(offset int64) {
	live := w.offsets[w.head:]
	// Binary search: a partition can hold thousands of unfinished records
	// behind a slow endpoint.
	lo, hi := 0, len(live)
	for lo < hi {
		mid := (lo + hi) / 2
		if live[mid] < offset {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(live) || live[lo] != offset {
		return
	}
	w.done[w.head+lo] = true
	for w.head < len(w.offsets) && w.done[w.head] {
		w.head++
	}
	// Reclaim the finished prefix once it is the larger half, so the queue
	// stays proportional to the unfinished records (amortised O(1)).
	if w.head > 64 && w.head*2 > len(w.offsets) {
		n := copy(w.offsets, w.offsets[w.head:])
		copy(w.done, w.done[w.head:])
		w.offsets, w.done, w.head = w.offsets[:n], w.done[:n], 0
	}
}

// commit is the offset to commit: everything below it is finished. It is -1
// while no record was taken.
func (w *watermark) commit() int64 {
	if w.head < len(w.offsets) {
		return w.offsets[w.head]
	}
	return w.next
}
