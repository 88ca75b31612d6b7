package api

import (
	"testing"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

type recordsByKey map[string]*sluicev1.ConfigRecord

func (m recordsByKey) Get(k string) (*sluicev1.ConfigRecord, bool) { r, ok := m[k]; return r, ok }

// TestDeliveryTopic: replay and recover send an ordered endpoint's
// deliveries to the ordered topic, which the sender sends them from, and
// every other delivery to the deliveries topic.
func TestDeliveryTopic(t *testing.T) {
	store := recordsByKey{
		"ep_fifo": {Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: &sluicev1.Endpoint{Id: "ep_fifo", Ordered: true}}},
		"ep_any":  {Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: &sluicev1.Endpoint{Id: "ep_any"}}},
	}
	for desc, tc := range map[string]struct{ endpoint, ordered, want string }{
		"an ordered endpoint":                 {"ep_fifo", "s.ordered", "s.ordered"},
		"an unordered endpoint":               {"ep_any", "s.ordered", "s.deliveries"},
		"an endpoint deleted meanwhile":       {"ep_gone", "s.ordered", "s.deliveries"},
		"no ordered topic configured (tests)": {"ep_fifo", "", "s.deliveries"},
	} {
		if got := deliveryTopic(store, tc.endpoint, "s.deliveries", tc.ordered); got != tc.want {
			t.Errorf("%s: %s, want %s", desc, got, tc.want)
		}
	}
}
