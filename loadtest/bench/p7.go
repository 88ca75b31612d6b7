package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/loadtest/receiver"
)

// p7Delay is how long the slow tenant's receivers take to answer 200: slow
// enough that its backlog needs more request slots than a sender has.
const p7Delay = 3 * time.Second

// p7: one tenant's slow endpoints against another tenant (DESIGN §9: the
// other keeps ≥ 95 % of its throughput and its p99 at most doubles). The
// measured tenant's 50 endpoints get events at P7Rate for P2Seconds, alone
// and then while a second tenant's 10 endpoints (max_in_flight 1000, the
// API's most), whose receivers answer 200 after 3 s, have P7Slow events
// each outstanding (3,000 requests in the quick run): more than the
// sender's 1024 slots, so without a per-tenant share they would hold every
// slot.
func (r *Runner) p7(ctx context.Context, rep *Report) error {
	_, key, err := r.Tenant(ctx, "bench-p7")
	if err != nil {
		return err
	}
	eps, err := r.Endpoints(ctx, key, "p7e", 50, func(i int) map[string]any { return Subscribe("bench.p7.e" + strconv.Itoa(i)) })
	if err != nil {
		return err
	}
	_, slowKey, err := r.Tenant(ctx, "bench-p7-slow")
	if err != nil {
		return err
	}
	slow, err := r.Endpoints(ctx, slowKey, "p7s", 10, func(int) map[string]any {
		return map[string]any{"events": []string{"bench.p7.slow"}, "max_in_flight": 1000}
	})
	if err != nil {
		return err
	}
	for _, ep := range slow {
		r.Recv.SetBehavior(ep.Name, receiver.Behavior{Delay: p7Delay})
	}
	rate := float64(r.Size.P7Rate)
	measure := func(what string) (p99 time.Duration, kept float64, missing, dups, sent int, err error) {
		r.Logf("P7: %.0f events/s for %d s to 50 endpoints, %s", rate, r.Size.P2Seconds, what)
		r.startTracking()
		defer r.stopTracking()
		evs, at, err := r.paced(ctx, key, rate, r.Size.P2Seconds, func(i int) string { return "bench.p7.e" + strconv.Itoa(i%50) })
		if err != nil {
			return 0, 0, 0, 0, 0, err
		}
		want := map[string][]string{}
		for i, e := range evs {
			want[eps[i%50].Name] = append(want[eps[i%50].Name], e.ID)
		}
		missing, dups = r.tally(want, time.Minute)
		lat := r.latencies(at)
		p99 = percentile(lat, 0.99)
		var inTime int
		for _, d := range lat {
			if d <= time.Second {
				inTime++
			}
		}
		return p99, float64(inTime) / float64(len(evs)), missing, dups, len(evs), nil
	}
	alone, keptAlone, missing, dups, sent, err := measure("alone")
	if err != nil {
		return err
	}
	rep.Results = append(rep.Results, Result{ID: "P7a", Name: "a tenant alone (P7's reference)", Sent: sent,
		Missing: missing, Duplicates: dups, Value: float64(alone.Microseconds()) / 1000,
		Figure: fmt.Sprintf("%.1f %% within 1 s, p99 %.1f ms at %.0f events/s", keptAlone*100, ms(alone), rate), Target: "(the reference)"})

	// The slow tenant's backlog, sent before the measured traffic starts
	// and still being answered (3 s each) throughout it.
	slowN := r.Size.P7Slow * len(slow)
	r.Logf("P7: %d events to another tenant's 10 endpoints answering after %v (%d deliveries)", r.Size.P7Slow, p7Delay, slowN)
	if err := r.sendHTTP(ctx, slowKey, NewEvents(r.Size.P7Slow, func(int) string { return "bench.p7.slow" }), 100, 8, nil); err != nil {
		return err
	}
	withSlow, kept, missing, dups, sent, err := measure("beside the slow tenant")
	if err != nil {
		return err
	}
	slowDone := 0
	for _, ep := range slow {
		slowDone += len(r.Recv.Received(ep.Name))
	}
	r.Logf("  P7 sender: %s", r.senderCounters())
	// The slow tenant's deliveries are left to drain; stop them reaching
	// later scenarios' figures.
	for _, ep := range slow {
		_ = r.S.API(ctx, "POST", "/v1/endpoints/"+ep.ID+"/disable", slowKey, map[string]any{"reason": "bench: P7 done"}, nil)
		r.Recv.SetBehavior(ep.Name, receiver.Behavior{})
	}
	share := kept / keptAlone
	rep.Results = append(rep.Results, Result{ID: "P7", Name: "one tenant's slow endpoints (200 after 3 s) against another tenant", Sent: sent,
		Missing: missing, Duplicates: dups, Value: share,
		Figure: fmt.Sprintf("%.1f %% of its throughput kept (%.1f %% within 1 s), p99 %.1f ms (alone %.1f ms); the slow tenant had %d of its %d deliveries answered meanwhile",
			share*100, kept*100, ms(withSlow), ms(alone), slowDone, slowN),
		Target: "≥ 95 % of throughput, p99 ≤ 2 × alone", Meets: yes(share >= 0.95 && withSlow <= 2*alone && missing == 0)})
	return nil
}
