// Package app is the ingest service: Sluice's public HTTP API (events,
// endpoints, tenants) and the router that fans events out to deliveries
// (DESIGN §2, §5).
package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/ingest/api"
	"github.com/sluicehq/sluice/services/ingest/router"
)

// Name is the service name in logs and metrics.
const Name = "ingest"

// Config is everything the ingest service can be told.
type Config struct {
	service.Common
	// APIAddr is where the public API listens.
	APIAddr string
	// MaxBodyBytes bounds a request body; larger requests are refused
	// before they are read whole.
	MaxBodyBytes int
	// ReadTimeout bounds reading one request, so slow clients cannot hold
	// connections open.
	ReadTimeout time.Duration
	// AdminKey authorises the tenant and API-key routes.
	AdminKey string
	// Secrets seals endpoint signing secrets at rest.
	Secrets secretbox.Config
	// RequireHTTPS refuses endpoints whose URL is not https.
	RequireHTTPS bool
	// RotationGrace is how long a rotated-out signing secret keeps signing.
	RotationGrace time.Duration
	Router        RouterConfig
	Events        EventsConfig
	Tenants       TenantsConfig
	// ClickHouse holds the delivery log the log, replay and recover routes
	// read.
	ClickHouse clickhousex.Config
}

// EventsConfig are the settings of the HTTP events API. Its data limit and
// dedup window are the router's (RouterConfig), so the API refuses what the
// router would and answers duplicates the router would drop.
type EventsConfig struct {
	// BufferBytes bounds the event records the producer holds until Kafka
	// acknowledges them; beyond it requests are answered 503 with
	// Retry-After instead of memory growing. 64 MiB is about a second of a
	// busy replica's events (60,000 of 1 KiB), enough to ride out a
	// partition leader moving, and 250 events at the 256 KiB limit.
	BufferBytes int
	// MaxBatch bounds the events of one batch request.
	MaxBatch int
}

// TenantsConfig are the operator's defaults of the per-tenant quotas; an
// admin overrides the first two per tenant (max_endpoints,
// events_per_second).
type TenantsConfig struct {
	// MaxEndpoints bounds a tenant's endpoints. Each matching endpoint is
	// one delivery with the whole payload in the router's transaction, so
	// it bounds one event's fan-out; api.MaxEndpointsLimit (10,000) is the
	// most it may be.
	MaxEndpoints int
	// EventsPerSecond bounds the events a tenant sends through one ingest
	// replica; 0 is no limit. Each replica keeps its own buckets, so N
	// replicas admit up to N times it.
	EventsPerSecond int
	// MaxRecoverJobs bounds a tenant's recover jobs running at once (each
	// reads the whole dead-letter topic with a client of its own).
	MaxRecoverJobs int
}

// RouterConfig are the settings of the router stage.
type RouterConfig struct {
	Enabled bool
	Group   string
	// MaxEventBytes bounds an event's JSON data.
	MaxEventBytes int
	// DedupWindow is how long a repeated event id of a tenant is dropped.
	DedupWindow time.Duration
	// DedupMaxEntries bounds the ids remembered per events partition, at
	// most 13.7 bytes each once the table is at its bound (dedup.Set):
	// 500,000 is 6.9 MB per partition this replica routes, and the dedup
	// view holds as much for every partition. It keeps the whole dedup
	// window only while it covers a partition's ids in a window (see the
	// sizing in ARCHITECTURE); the router exports the effective window.
	DedupMaxEntries int
	// MaxBatch bounds the events of one transaction.
	MaxBatch int
	// TxnBytes bounds the bytes one routing transaction produces; a larger
	// fan-out is split across transactions (router.Options.TxnBytes).
	TxnBytes int
}

// LoadConfig reads flags and SLUICE_* variables and validates the result.
func LoadConfig(args []string, env config.LookupEnv) (Config, error) {
	return service.Load(Name, args, env, register)
}

// Knobs lists every setting, for documentation.
func Knobs() []config.Knob { return service.Knobs(register) }

func register(c *Config, l *config.Loader) {
	c.Common.Register(l, Name)
	l.String(&c.APIAddr, "api-addr", ":8080", "listen address of the public HTTP API")
	// A batch of 500 events of 256 KiB each is the largest valid request
	// the events API will take; 4 MiB is the default cap above one event.
	l.Int(&c.MaxBodyBytes, "max-body-bytes", 4<<20, "largest request body the API reads, in bytes")
	l.Duration(&c.ReadTimeout, "read-timeout", 30*time.Second, "how long reading one request may take")
	l.String(&c.AdminKey, "admin-key", "",
		"key of the admin API (tenants and their API keys), at least 32 characters; empty disables it")
	c.Secrets.Register(l)
	c.ClickHouse.Register(l)
	l.Bool(&c.RequireHTTPS, "require-https", false, "refuse endpoint URLs that are not https")
	l.Duration(&c.RotationGrace, "secret-rotation-grace", 24*time.Hour,
		"how long a rotated-out endpoint secret keeps signing beside the new one")
	l.Bool(&c.Router.Enabled, "router-enabled", true, "run the router stage (events to deliveries) in this process")
	l.String(&c.Router.Group, "router-group", "sluice-router", "Kafka consumer group of the routers")
	l.Int(&c.Router.MaxEventBytes, "max-event-bytes", 256<<10, "largest event data accepted, in bytes")
	l.Duration(&c.Router.DedupWindow, "dedup-window", 24*time.Hour, "how long a repeated event id of a tenant is dropped")
	l.Int(&c.Router.DedupMaxEntries, "dedup-max-entries", 500000,
		"event ids remembered per events partition (at most 13.7 bytes each at the bound)")
	l.Int(&c.Router.MaxBatch, "router-max-batch", 500, "events routed in one Kafka transaction at most")
	l.Int(&c.Router.TxnBytes, "router-txn-bytes", router.DefaultTxnBytes,
		"bytes one routing transaction produces at most; a larger fan-out continues in the next transaction")
	l.Int(&c.Events.BufferBytes, "events-buffer-bytes", 64<<20,
		"event bytes the API buffers for Kafka at most; beyond it requests get 503 with Retry-After")
	l.Int(&c.Events.MaxBatch, "events-max-batch", 500, "events in one POST /v1/events/batch at most")
	l.Int(&c.Tenants.MaxEndpoints, "tenant-max-endpoints", api.DefaultMaxEndpoints,
		"endpoints a tenant may have, unless its max_endpoints says otherwise")
	l.Int(&c.Tenants.EventsPerSecond, "tenant-events-per-second", 0,
		"events per second a tenant may send through this replica, unless its events_per_second says otherwise; 0 is no limit")
	l.Int(&c.Tenants.MaxRecoverJobs, "tenant-max-recover-jobs", api.DefaultMaxRecoverJobs,
		"recover jobs of one tenant running at once, across replicas")
}

// Validate checks every setting.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.APIAddr == "" {
		errs = append(errs, errors.New("api-addr must not be empty"))
	}
	if c.MaxBodyBytes < 1<<10 || c.MaxBodyBytes > 256<<20 {
		errs = append(errs, fmt.Errorf("max-body-bytes must be between 1024 and 268435456, got %d", c.MaxBodyBytes))
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("read-timeout must be positive, got %v", c.ReadTimeout))
	}
	// 32 characters of a random key are at least 160 bits; shorter keys
	// are passwords.
	if c.AdminKey != "" && len(c.AdminKey) < 32 {
		errs = append(errs, fmt.Errorf("admin-key must be at least 32 characters, got %d", len(c.AdminKey)))
	}
	errs = append(errs, c.Secrets.Validate(), c.ClickHouse.Validate())
	if c.RotationGrace < 0 || c.RotationGrace > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("secret-rotation-grace must be from 0 to 168h, got %v", c.RotationGrace))
	}
	r := c.Router
	if r.Group == "" {
		errs = append(errs, errors.New("router-group must not be empty"))
	}
	// Every record the router makes from an event must fit the producer's
	// 1,000,012-byte record limit, the event-log entry naming up to 10,000
	// endpoints beside the data included (router.MaxDataBytes); a larger
	// event could never be routed.
	if r.MaxEventBytes < 1<<10 || r.MaxEventBytes > router.MaxDataBytes {
		errs = append(errs, fmt.Errorf("max-event-bytes must be from 1024 to %d (what a record can hold beside %d endpoint ids), got %d",
			router.MaxDataBytes, router.MaxFanoutIDs, r.MaxEventBytes))
	}
	// At least two of the largest records, so a split fan-out still makes
	// progress; at most 256 MiB, which a broker writes well inside the
	// 20 s transaction timeout only when it is idle.
	if r.TxnBytes < 2*router.MaxRecordBytes || r.TxnBytes > 256<<20 {
		errs = append(errs, fmt.Errorf("router-txn-bytes must be from %d to 268435456, got %d", 2*router.MaxRecordBytes, r.TxnBytes))
	}
	// The dedup topic keeps markers 7 days.
	if r.DedupWindow < time.Minute || r.DedupWindow > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("dedup-window must be from 1m to 168h, got %v", r.DedupWindow))
	}
	if r.DedupMaxEntries < 1000 || r.DedupMaxEntries > 50_000_000 {
		errs = append(errs, fmt.Errorf("dedup-max-entries must be from 1000 to 50000000, got %d", r.DedupMaxEntries))
	}
	if r.MaxBatch < 1 || r.MaxBatch > 10000 {
		errs = append(errs, fmt.Errorf("router-max-batch must be from 1 to 10000, got %d", r.MaxBatch))
	}
	// franz-go fails a record larger than the whole buffer, so the buffer
	// must hold at least one event at the largest max-event-bytes (1 MiB
	// with its record overhead).
	if e := c.Events; e.BufferBytes < 2<<20 || e.BufferBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("events-buffer-bytes must be from 2097152 to 1073741824, got %d", e.BufferBytes))
	}
	if e := c.Events; e.MaxBatch < 1 || e.MaxBatch > 10000 {
		errs = append(errs, fmt.Errorf("events-max-batch must be from 1 to 10000, got %d", e.MaxBatch))
	}
	if n := c.Tenants.MaxEndpoints; n < 1 || n > api.MaxEndpointsLimit {
		errs = append(errs, fmt.Errorf("tenant-max-endpoints must be from 1 to %d, got %d", api.MaxEndpointsLimit, n))
	}
	if n := c.Tenants.EventsPerSecond; n < 0 || n > api.MaxEventsPerSecond {
		errs = append(errs, fmt.Errorf("tenant-events-per-second must be from 0 (no limit) to %d, got %d", api.MaxEventsPerSecond, n))
	}
	// Each running job is a Kafka client reading every dead-letter
	// partition; 100 per tenant is already far more than one needs.
	if n := c.Tenants.MaxRecoverJobs; n < 1 || n > 100 {
		errs = append(errs, fmt.Errorf("tenant-max-recover-jobs must be from 1 to 100, got %d", n))
	}
	return errors.Join(errs...)
}
