package dispatch

import "slices"

// watermark tracks the records of one partition that were taken but are not
// finished, to find the offset that may be committed: the lowest unfinished
// record, or the offset after the last record when all are finished.
// Records are taken in offset order, except when an ordered partition is
// read again from an earlier offset (lane.go), and finish in any order;
// offsets may skip (transaction markers occupy offsets too), so the entries
// are kept as a sorted queue rather than assumed contiguous.
type watermark struct {
	offsets []int64
	done    []bool
	head    int   // entries before head are finished and forgotten
	next    int64 // the offset after the last record taken; -1 before any
}

func newWatermark() watermark { return watermark{next: -1} }

// take records that offset is being worked on. An offset below one already
// taken (a re-read) is inserted in its place: the entries after it move,
// which costs as many as are live, and only rewinds of ordered partitions
// pay it. An offset already taken must not be taken again.
func (w *watermark) take(offset int64) {
	if n := len(w.offsets); n == w.head || w.offsets[n-1] < offset {
		w.offsets = append(w.offsets, offset)
		w.done = append(w.done, false)
		w.next = max(w.next, offset+1)
		return
	}
	i := w.head + w.search(offset)
	w.offsets = slices.Insert(w.offsets, i, offset)
	w.done = slices.Insert(w.done, i, false)
}

// search is the index in the live entries of the first offset at or above
// offset. Binary: a partition can hold thousands of unfinished records
// behind a slow endpoint.
func (w *watermark) search(offset int64) int {
	live := w.offsets[w.head:]
	lo, hi := 0, len(live)
	for lo < hi {
		mid := (lo + hi) / 2
		if live[mid] < offset {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// finish records that offset is done. It is a no-op for an offset not taken
// (or already forgotten), so a stale completion cannot move the mark.
func (w *watermark) finish(offset int64) {
	live := w.offsets[w.head:]
	lo := w.search(offset)
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

// low is the lowest unfinished offset; false when every record taken is
// finished.
func (w *watermark) low() (int64, bool) {
	if w.head < len(w.offsets) {
		return w.offsets[w.head], true
	}
	return 0, false
}

// commit is the offset to commit: everything below it is finished. It is -1
// while no record was taken.
func (w *watermark) commit() int64 {
	if w.head < len(w.offsets) {
		return w.offsets[w.head]
	}
	return w.next
}
