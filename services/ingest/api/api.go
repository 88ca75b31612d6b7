package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/services/ingest/logquery"
)

// Store is what the API needs of the config view.
type Store interface {
	Get(key string) (*sluicev1.ConfigRecord, bool)
	Tenants() []*sluicev1.Tenant
	TenantObjects(tenant string) []*sluicev1.ConfigRecord
	APIKeyByHash(hash [32]byte) (*sluicev1.APIKey, bool)
	Update(ctx context.Context, key string,
		fn func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (*sluicev1.ConfigRecord, error)
}

var _ Store = (*configstore.Store)(nil)

// Options are the API's settings.
type Options struct {
	// AdminKey authorises the tenant and API-key routes; empty disables
	// them.
	AdminKey string
	// RequireHTTPS refuses endpoint URLs that are not https.
	RequireHTTPS bool
	// RotationGrace is how long a rotated-out secret keeps signing, unless
	// the rotate request says otherwise.
	RotationGrace time.Duration
	// WriteTimeout bounds one write to the config topic.
	WriteTimeout time.Duration
	// Events configures POST /v1/events and /v1/events/batch; the zero
	// value leaves them answering 503.
	Events EventsOptions
	// Log reads the delivery log in ClickHouse; nil answers the log routes
	// 503.
	Log *logquery.Reader
	// Deliveries configures replay and recover.
	Deliveries DeliveriesOptions
	// Tenants are the operator's defaults of the per-tenant quotas.
	Tenants TenantLimits
	// ConfigReady reports whether the config view has caught up; until it
	// has, authenticated routes answer 503 rather than judge keys and
	// objects against a partial view (a valid key would be 401). nil means
	// always caught up.
	ConfigReady func() error
	// Now tells the time (tests control it); nil means time.Now.
	Now func() time.Time
}

// TenantLimits are the operator's defaults of the per-tenant quotas; an
// admin overrides them on a tenant.
type TenantLimits struct {
	// MaxEndpoints bounds a tenant's endpoints; zero or less means
	// DefaultMaxEndpoints.
	MaxEndpoints int
	// EventsPerSecond bounds the events a tenant sends through this API;
	// zero or less is no limit.
	EventsPerSecond int
}

// Bounds of a tenant's endpoints. Every endpoint matching an event is one
// delivery carrying the whole payload in the router's transaction, so the
// count bounds what one event costs there (review H2): at the default, a
// 256 KiB event fans out to at most 1,000 deliveries, 256 MiB. 10,000 is
// the ceiling the router sizes its records on: the event-log entry lists
// every endpoint id (29 bytes, 31 encoded), 310 KB for 10,000, which with
// a 256 KiB payload stays under Kafka's 1 MB record.
const (
	DefaultMaxEndpoints = 1000
	MaxEndpointsLimit   = 10000
)

func (l TenantLimits) maxEndpoints() int {
	if l.MaxEndpoints <= 0 {
		return DefaultMaxEndpoints
	}
	return l.MaxEndpoints
}

// API serves the routes.
type API struct {
	store     Store
	box       *secretbox.Box
	opts      Options
	log       *slog.Logger
	now       func() time.Time
	adminHash [32]byte
	routes    []route
	openapi   []byte
	quotas    eventQuotas
}

// New builds the API over a config store and the box sealing secrets.
func New(store Store, box *secretbox.Box, opts Options, log *slog.Logger) *API {
	a := &API{store: store, box: box, opts: opts, log: log, now: opts.Now, openapi: openAPIDocument}
	if a.now == nil {
		a.now = time.Now
	}
	if opts.AdminKey != "" {
		a.adminHash = hashKey(opts.AdminKey)
	}
	a.routes = []route{
		{"GET", "/openapi.json", public, a.serveOpenAPI},

		{"POST", "/v1/tenants", adminOnly, a.createTenant},
		{"GET", "/v1/tenants", adminOnly, a.listTenants},
		{"GET", "/v1/tenants/{tenant_id}", adminOnly, a.getTenant},
		{"PATCH", "/v1/tenants/{tenant_id}", adminOnly, a.patchTenant},
		{"DELETE", "/v1/tenants/{tenant_id}", adminOnly, a.deleteTenant},
		{"POST", "/v1/tenants/{tenant_id}/api-keys", adminOnly, a.createAPIKey},
		{"GET", "/v1/tenants/{tenant_id}/api-keys", adminOnly, a.listAPIKeys},
		{"DELETE", "/v1/tenants/{tenant_id}/api-keys/{key_id}", adminOnly, a.deleteAPIKey},

		{"POST", "/v1/endpoints", tenantOnly, a.createEndpoint},
		{"GET", "/v1/endpoints", tenantOnly, a.listEndpoints},
		{"GET", "/v1/endpoints/{endpoint_id}", tenantOnly, a.getEndpoint},
		{"PATCH", "/v1/endpoints/{endpoint_id}", tenantOnly, a.patchEndpoint},
		{"DELETE", "/v1/endpoints/{endpoint_id}", tenantOnly, a.deleteEndpoint},
		{"POST", "/v1/endpoints/{endpoint_id}/rotate-secret", tenantOnly, a.rotateSecret},
		{"POST", "/v1/endpoints/{endpoint_id}/enable", tenantOnly, a.enableEndpoint},
		{"POST", "/v1/endpoints/{endpoint_id}/disable", tenantOnly, a.disableEndpoint},

		{"POST", "/v1/events", tenantOnly, a.publishEvent},
		{"POST", "/v1/events/batch", tenantOnly, a.publishEventBatch},

		{"GET", "/v1/events", tenantOnly, a.listLoggedEvents},
		{"GET", "/v1/events/{event_id}", tenantOnly, a.getLoggedEvent},
		{"POST", "/v1/events/{event_id}/replay", tenantOnly, a.replayEvent},
		{"GET", "/v1/attempts", tenantOnly, a.listAttempts},
		{"GET", "/v1/endpoints/{endpoint_id}/attempts", tenantOnly, a.listAttempts},
		{"GET", "/v1/endpoints/{endpoint_id}/stats", tenantOnly, a.endpointStats},
		{"POST", "/v1/endpoints/{endpoint_id}/recover", tenantOnly, a.recoverEndpoint},
		{"GET", "/v1/endpoints/{endpoint_id}/recover/{job_id}", tenantOnly, a.getRecoverJob},
	}
	return a
}

// Handler is the fasthttp handler of the API.
func (a *API) Handler() fasthttp.RequestHandler { return a.dispatch }

func (a *API) serveOpenAPI(r *request) {
	r.Response.Header.SetContentType("application/json")
	r.SetBody(a.openapi)
}

// writeCtx is the context of one config write: bounded, and not cancelled
// by the client hanging up half way (the write either happens or not).
func (a *API) writeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.opts.WriteTimeout)
}

// newEtag is a fresh entity tag.
func newEtag() string { return configstore.NewEtag() }
