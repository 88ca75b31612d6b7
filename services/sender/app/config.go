// Package app is the sender: it consumes sluice.deliveries and the retry
// tiers, POSTs each delivery to its endpoint (package deliver) under
// per-endpoint flow control (package dispatch) and records every attempt on
// sluice.attempts (DESIGN §6).
package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/egress"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/sender/retry"
)

// Name is the service name in logs and metrics.
const Name = "sender"

// Config is everything the sender can be told.
type Config struct {
	service.Common
	// Secrets opens the endpoints' signing secrets: the same key ingest
	// seals them with.
	Secrets secretbox.Config
	// Group is the consumer group; sender replicas share the partitions.
	Group string
	// RequestTimeout bounds one HTTP attempt from dial to the last byte of
	// the response, for endpoints that set no timeout of their own.
	RequestTimeout time.Duration
	// MaxInFlight bounds concurrent HTTP requests of the whole process.
	MaxInFlight int
	// TenantMaxInFlight bounds one tenant's share of them; 0 is a quarter.
	TenantMaxInFlight int
	// EndpointMaxInFlight is the concurrency of an endpoint that sets none.
	EndpointMaxInFlight int
	// EndpointQueue bounds the deliveries waiting for one endpoint.
	EndpointQueue int
	// MaxQueueWait is how long a delivery may wait for its endpoint before
	// it is moved to the first retry tier.
	MaxQueueWait time.Duration
	// MemoryBudget bounds the bytes of deliveries held in memory.
	MemoryBudget int
	// OrderedMemoryBudget bounds the bytes of ordered endpoints' deliveries
	// held in memory, apart from MemoryBudget.
	OrderedMemoryBudget int
	// RevokeGrace is how long requests of a revoked partition may finish.
	RevokeGrace time.Duration
	// AttemptLogBuffer bounds the records (attempts, retries, dead letters)
	// waiting for Kafka's acknowledgement.
	AttemptLogBuffer int
	// ResponseExcerpt is how much of a response body is kept for the log.
	ResponseExcerpt int
	// UserAgent is sent with every webhook.
	UserAgent string
	// Circuit is the per-endpoint circuit breaker; its FailureRatio comes
	// from CircuitFailurePercent.
	Circuit               retry.BreakerConfig
	CircuitFailurePercent int
	// DisableAfter is how long an endpoint may fail without one success
	// before the sender disables it.
	DisableAfter time.Duration
	// EgressAllow are CIDRs the sender may connect to although they are
	// internal (loopback, private, link-local…).
	EgressAllow []string
}

// LoadConfig reads flags and SLUICE_* variables and validates the result.
func LoadConfig(args []string, env config.LookupEnv) (Config, error) {
	return service.Load(Name, args, env, register)
}

// Knobs lists every setting, for documentation.
func Knobs() []config.Knob { return service.Knobs(register) }

func register(c *Config, l *config.Loader) {
	c.Common.Register(l, Name)
	c.Secrets.Register(l)
	l.String(&c.Group, "group", "sluice-sender", "Kafka consumer group of the senders")
	l.Duration(&c.RequestTimeout, "request-timeout", 15*time.Second,
		"timeout of one webhook request for endpoints without their own")
	l.Int(&c.MaxInFlight, "max-in-flight", 1024, "concurrent webhook requests of this process at most")
	// A quarter: a tenant whose receivers answer slowly (up to 60 s at
	// max_in_flight 1000) holds at most 256 of the default 1024 slots, and
	// three quarters stay for the others however many endpoints it has.
	l.Int(&c.TenantMaxInFlight, "tenant-max-in-flight", 0,
		"concurrent webhook requests of one tenant's endpoints in this process at most; 0 is a quarter of max-in-flight")
	l.Int(&c.EndpointMaxInFlight, "endpoint-max-in-flight", 10,
		"concurrent requests to one endpoint that sets no max_in_flight")
	l.Int(&c.EndpointQueue, "endpoint-queue", 1000,
		"deliveries waiting for one endpoint at most; more go to the first retry tier")
	l.Duration(&c.MaxQueueWait, "max-queue-wait", 5*time.Second,
		"longest a delivery waits for its endpoint before it moves to the first retry tier")
	l.Int(&c.MemoryBudget, "memory-budget-bytes", 256<<20,
		"bytes of deliveries held in memory at most; above it fetching pauses")
	// A quarter of the memory budget: ordered endpoints are for low
	// volumes, and 64 MiB still holds 256 of the largest (256 KiB) events
	// waiting behind failing heads, or some 60,000 of 1 KiB.
	l.Int(&c.OrderedMemoryBudget, "ordered-memory-budget-bytes", 64<<20,
		"bytes of ordered endpoints' deliveries held in memory; above it a lane holding one takes no more until it drains")
	l.Duration(&c.RevokeGrace, "revoke-grace", 5*time.Second,
		"how long requests of a partition moving to another sender may finish before it is given up")
	l.Int(&c.AttemptLogBuffer, "attempt-log-buffer", 10000,
		"records waiting for Kafka at most (attempts, retries, dead letters); beyond it new requests wait")
	l.Int(&c.ResponseExcerpt, "response-excerpt-bytes", 4096, "bytes of each response body kept for the log")
	l.String(&c.UserAgent, "user-agent", "Sluice-Webhooks/1", "User-Agent header of every webhook")
	l.Duration(&c.Circuit.Window, "circuit-window", retry.DefaultBreaker.Window,
		"how far back an endpoint's attempts count for its circuit breaker")
	l.Int(&c.Circuit.MinAttempts, "circuit-min-attempts", retry.DefaultBreaker.MinAttempts,
		"attempts within the window before an endpoint's circuit may open")
	l.Int(&c.CircuitFailurePercent, "circuit-failure-percent", int(retry.DefaultBreaker.FailureRatio*100),
		"share of failed attempts within the window, in percent, at which the circuit opens")
	l.Duration(&c.Circuit.OpenFor, "circuit-open-for", retry.DefaultBreaker.OpenFor,
		"how long an open circuit holds requests back before one probe may pass")
	l.Duration(&c.DisableAfter, "disable-after", 5*24*time.Hour,
		"how long an endpoint may fail without a single success before it is disabled")
	l.StringList(&c.EgressAllow, "egress-allow", nil,
		"CIDRs or IPs webhooks may reach although internal (loopback, private, link-local, metadata); empty refuses them all")
}

// Validate checks every setting.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.Secrets.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("group must not be empty"))
	}
	if c.RequestTimeout < 100*time.Millisecond || c.RequestTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("request-timeout must be between 100ms and 5m, got %v", c.RequestTimeout))
	}
	// Each request holds a connection and a goroutine; 10,000 is far above
	// what one process on a few cores can drive.
	if c.MaxInFlight < 1 || c.MaxInFlight > 10000 {
		errs = append(errs, fmt.Errorf("max-in-flight must be between 1 and 10000, got %d", c.MaxInFlight))
	}
	if c.TenantMaxInFlight < 0 || c.TenantMaxInFlight > c.MaxInFlight {
		errs = append(errs, fmt.Errorf("tenant-max-in-flight must be between 0 (a quarter of max-in-flight) and max-in-flight (%d), got %d",
			c.MaxInFlight, c.TenantMaxInFlight))
	}
	// The API accepts max_in_flight up to 1000 per endpoint.
	if c.EndpointMaxInFlight < 1 || c.EndpointMaxInFlight > 1000 {
		errs = append(errs, fmt.Errorf("endpoint-max-in-flight must be between 1 and 1000, got %d", c.EndpointMaxInFlight))
	}
	if c.EndpointQueue < 1 || c.EndpointQueue > 1_000_000 {
		errs = append(errs, fmt.Errorf("endpoint-queue must be between 1 and 1000000, got %d", c.EndpointQueue))
	}
	// Above a minute a slow endpoint holds the commit (and what a crash
	// sends again) too long; below 100 ms deliveries bounce through the
	// retry tier before a normal request could finish.
	if c.MaxQueueWait < 100*time.Millisecond || c.MaxQueueWait > time.Minute {
		errs = append(errs, fmt.Errorf("max-queue-wait must be between 100ms and 1m, got %v", c.MaxQueueWait))
	}
	// 16 MiB holds a few fetches; 64 GiB is more than any sender needs.
	if c.MemoryBudget < 16<<20 || c.MemoryBudget > 64<<30 {
		errs = append(errs, fmt.Errorf("memory-budget-bytes must be from 16777216 to 68719476736, got %d", c.MemoryBudget))
	}
	// Every lane may hold one delivery beyond the budget, so any size
	// works; below 1 MiB, about one largest record, lanes would hold one
	// delivery each all the time.
	if c.OrderedMemoryBudget < 1<<20 || c.OrderedMemoryBudget > 64<<30 {
		errs = append(errs, fmt.Errorf("ordered-memory-budget-bytes must be from 1048576 to 68719476736, got %d", c.OrderedMemoryBudget))
	}
	// A revoke holds up the group's rebalance; franz-go's rebalance
	// timeout is 60 s.
	if c.RevokeGrace < 0 || c.RevokeGrace > 45*time.Second {
		errs = append(errs, fmt.Errorf("revoke-grace must be between 0s and 45s, got %v", c.RevokeGrace))
	}
	if c.AttemptLogBuffer < 100 || c.AttemptLogBuffer > 1_000_000 {
		errs = append(errs, fmt.Errorf("attempt-log-buffer must be between 100 and 1000000, got %d", c.AttemptLogBuffer))
	}
	// The excerpt travels in every attempt record; 64 KiB keeps those small.
	if c.ResponseExcerpt < 0 || c.ResponseExcerpt > 64<<10 {
		errs = append(errs, fmt.Errorf("response-excerpt-bytes must be between 0 and 65536, got %d", c.ResponseExcerpt))
	}
	if c.UserAgent == "" {
		errs = append(errs, errors.New("user-agent must not be empty"))
	}
	if c.Circuit.Window < time.Second || c.Circuit.Window > time.Hour {
		errs = append(errs, fmt.Errorf("circuit-window must be between 1s and 1h, got %v", c.Circuit.Window))
	}
	if c.Circuit.MinAttempts < 1 || c.Circuit.MinAttempts > 100000 {
		errs = append(errs, fmt.Errorf("circuit-min-attempts must be between 1 and 100000, got %d", c.Circuit.MinAttempts))
	}
	// 100 % opens only when every attempt failed; above that it never would.
	if c.CircuitFailurePercent < 1 || c.CircuitFailurePercent > 100 {
		errs = append(errs, fmt.Errorf("circuit-failure-percent must be between 1 and 100, got %d", c.CircuitFailurePercent))
	}
	if c.Circuit.OpenFor < 100*time.Millisecond || c.Circuit.OpenFor > time.Hour {
		errs = append(errs, fmt.Errorf("circuit-open-for must be between 100ms and 1h, got %v", c.Circuit.OpenFor))
	}
	// Below an hour a receiver's routine maintenance would disable it.
	if c.DisableAfter < time.Hour || c.DisableAfter > 90*24*time.Hour {
		errs = append(errs, fmt.Errorf("disable-after must be between 1h and 2160h (90 days), got %v", c.DisableAfter))
	}
	if _, err := egress.ParseAllowList(c.EgressAllow); err != nil {
		errs = append(errs, fmt.Errorf("egress-allow: %w", err))
	}
	return errors.Join(errs...)
}
