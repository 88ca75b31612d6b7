package dispatch

// The process's request slots (MaxInFlight) are shared by tenants: one
// tenant's requests hold at most TenantInFlight of them (a quarter by
// default), so a tenant whose receivers are slow but answer cannot take
// them all; and when slots are short, the queues waiting for one are
// served a tenant at a time in turn, not in the order they began waiting,
// so a tenant with many endpoints gets no more turns than one with few.

// slotFree reports whether q may start a request now: the process and q's
// tenant are under their limits. If not, q waits for a slot.
func (d *Dispatcher) slotFree(q *queue) bool {
	if d.running < d.opts.MaxInFlight && d.tenantRunning[q.tenant] < d.opts.TenantInFlight {
		return true
	}
	if !q.waiting {
		q.waiting = true
		if len(d.ready[q.tenant]) == 0 {
			d.turns = append(d.turns, q.tenant)
		}
		d.ready[q.tenant] = append(d.ready[q.tenant], q)
	}
	return false
}

// startRequest counts a request of q as started.
func (d *Dispatcher) startRequest(q *queue) {
	q.running++
	d.running++
	d.tenantRunning[q.tenant]++
}

// freeSlot gives back the process and tenant slot of a request of q (its
// endpoint's own count is given back when the attempt is settled).
func (d *Dispatcher) freeSlot(q *queue) {
	d.running--
	if d.tenantRunning[q.tenant]--; d.tenantRunning[q.tenant] <= 0 {
		delete(d.tenantRunning, q.tenant)
	}
}

// serveWaiting hands free slots to the waiting queues: the tenant whose
// turn it is serves its longest-waiting queue, then goes to the back of
// the line if it has more. A tenant at its limit is passed over. It stops
// when the slots are taken, or when every waiting tenant had a turn that
// started nothing (rate-limited, or at its limit).
func (d *Dispatcher) serveWaiting() {
	idle := 0
	for d.running < d.opts.MaxInFlight && len(d.turns) > 0 && idle < len(d.turns) {
		t := d.turns[0]
		d.turns = d.turns[1:]
		if d.tenantRunning[t] >= d.opts.TenantInFlight {
			d.turns = append(d.turns, t)
			idle++
			continue
		}
		qs := d.ready[t]
		q := qs[0]
		qs[0] = nil
		if qs = qs[1:]; len(qs) == 0 {
			delete(d.ready, t)
		} else {
			d.ready[t] = qs
			d.turns = append(d.turns, t)
		}
		q.waiting = false
		before := d.running
		d.serve(q) // may start requests, or wait again
		if d.running > before {
			idle = 0
		} else {
			idle++
		}
	}
}
