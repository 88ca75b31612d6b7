// Package router is the ingest service's router stage (DESIGN §5): it reads
// sluice.events and fans each event out to the endpoints subscribed to its
// type. This file is its endpoint index.
package router

import (
	"slices"
	"strings"
	"sync"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/eventfilter"
)

// Index answers which endpoints of a tenant receive an event type, without
// looking at every endpoint: filters without a wildcard are found in a map
// by the type itself, and only the tenant's endpoints with a wildcard filter
// (or none, which means every type) are tested one by one. It is kept up to
// date from the config store (Load the snapshot of Subscribe, then Apply
// every change) and is safe for concurrent use.
type Index struct {
	onInvalid func(endpointID string, err error)

	mu      sync.RWMutex
	tenants map[string]*tenantIndex
	// owner remembers each indexed endpoint's tenant, so a change that
	// moves or deletes it can find the old entry.
	owner map[string]string
	// Until Load has run, applied holds the keys Apply has seen: their
	// changes are newer than the snapshot Load is given (configstore's
	// Subscribe registers Apply before it returns the snapshot), so Load
	// must not put the snapshot's older versions back.
	loaded  bool
	applied map[string]bool
}

type tenantIndex struct {
	// exact maps an event type to the endpoints with that exact filter.
	exact map[string][]*entry
	// wild holds endpoints with a wildcard filter or none at all; set holds
	// only their wildcard filters (the exact ones are in exact).
	wild []*entry
	byID map[string]*entry
}

type entry struct {
	endpoint *sluicev1.Endpoint
	exact    []string
	set      eventfilter.Set
	wildcard bool // in wild: has a wildcard filter, or no filter at all
}

// NewIndex returns an empty index. onInvalid is told about an endpoint
// whose stored filters do not compile (the API never stores such filters;
// a record written some other way is then matched by nothing).
func NewIndex(onInvalid func(endpointID string, err error)) *Index {
	if onInvalid == nil {
		onInvalid = func(string, error) {}
	}
	return &Index{onInvalid: onInvalid, tenants: map[string]*tenantIndex{}, owner: map[string]string{},
		applied: map[string]bool{}}
}

// Load indexes every endpoint of a snapshot (see configstore.Subscribe),
// except those a change applied meanwhile has superseded.
func (ix *Index) Load(snapshot map[string]*sluicev1.ConfigRecord) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for key, rec := range snapshot {
		if e := rec.GetEndpoint(); e != nil && !ix.applied[key] {
			ix.putLocked(e)
		}
	}
	ix.loaded, ix.applied = true, nil
}

// Apply follows one change of the config store.
func (ix *Index) Apply(c configstore.Change) {
	if c.Old.GetEndpoint() == nil && c.New.GetEndpoint() == nil {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !ix.loaded {
		ix.applied[c.Key] = true
	}
	ix.removeLocked(c.Key)
	if e := c.New.GetEndpoint(); e != nil {
		ix.putLocked(e)
	}
}

func (ix *Index) putLocked(e *sluicev1.Endpoint) {
	ix.removeLocked(e.Id)
	en := &entry{endpoint: e}
	var wildFilters []string
	for _, f := range e.EventTypes {
		switch {
		case strings.Contains(f, "*"):
			wildFilters = append(wildFilters, f)
		case !slices.Contains(en.exact, f):
			// A filter listed twice must not match twice: that would be
			// two deliveries with one delivery id.
			en.exact = append(en.exact, f)
		}
	}
	if len(e.EventTypes) > 0 {
		if _, err := eventfilter.Compile(e.EventTypes); err != nil {
			ix.onInvalid(e.Id, err)
			return
		}
	}
	// No filter at all means every type: an empty Set matches everything.
	en.wildcard = len(wildFilters) > 0 || len(e.EventTypes) == 0
	en.set, _ = eventfilter.Compile(wildFilters)

	t := ix.tenants[e.TenantId]
	if t == nil {
		t = &tenantIndex{exact: map[string][]*entry{}, byID: map[string]*entry{}}
		ix.tenants[e.TenantId] = t
	}
	t.byID[e.Id] = en
	for _, f := range en.exact {
		t.exact[f] = append(t.exact[f], en)
	}
	if en.wildcard {
		t.wild = append(t.wild, en)
	}
	ix.owner[e.Id] = e.TenantId
}

func (ix *Index) removeLocked(id string) {
	tenant, ok := ix.owner[id]
	if !ok {
		return
	}
	delete(ix.owner, id)
	t := ix.tenants[tenant]
	en := t.byID[id]
	delete(t.byID, id)
	for _, f := range en.exact {
		t.exact[f] = slices.DeleteFunc(t.exact[f], func(x *entry) bool { return x == en })
		if len(t.exact[f]) == 0 {
			delete(t.exact, f)
		}
	}
	if en.wildcard {
		t.wild = slices.DeleteFunc(t.wild, func(x *entry) bool { return x == en })
	}
	if len(t.byID) == 0 {
		delete(ix.tenants, tenant)
	}
}

// Match appends to dst the endpoints of tenant that receive eventType —
// enabled or not: the router parks deliveries of a disabled endpoint
// rather than drop them — each once, ordered by id so a batch fans out in
// the same order whenever it is processed. The endpoints are shared: do
// not modify them.
func (ix *Index) Match(dst []*sluicev1.Endpoint, tenant, eventType string) []*sluicev1.Endpoint {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	t := ix.tenants[tenant]
	if t == nil {
		return dst
	}
	start := len(dst)
	for _, en := range t.exact[eventType] {
		dst = append(dst, en.endpoint)
	}
	for _, en := range t.wild {
		if en.set.Matches(eventType) && !slices.Contains(en.exact, eventType) {
			dst = append(dst, en.endpoint)
		}
	}
	found := dst[start:]
	slices.SortFunc(found, func(a, b *sluicev1.Endpoint) int { return strings.Compare(a.Id, b.Id) })
	return dst
}

// Endpoint returns the indexed endpoint with id. It is shared: do not
// modify it.
func (ix *Index) Endpoint(id string) (*sluicev1.Endpoint, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	t := ix.tenants[ix.owner[id]]
	if t == nil {
		return nil, false
	}
	en := t.byID[id]
	if en == nil {
		return nil, false
	}
	return en.endpoint, true
}

// Len is the number of endpoints indexed.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.owner)
}
