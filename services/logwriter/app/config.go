// Package app is the logwriter: it streams sluice.attempts and
// sluice.eventlog into the ClickHouse tables attempts and events in batches,
// committing Kafka offsets only after ClickHouse acknowledged (DESIGN §7).
package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/service"
)

// Name is the service name in logs and metrics.
const Name = "logwriter"

// Config is everything the logwriter can be told.
type Config struct {
	service.Common
	ClickHouse clickhousex.Config
	// Group is the consumer group; replicas share the partitions.
	Group string
	// BatchRows and BatchWait bound a batch: it is inserted when it holds
	// BatchRows rows or its first row is BatchWait old. ClickHouse prefers
	// few large inserts (each insert makes a part to merge); 10,000 rows or
	// 1 s keeps parts large at high rates and the log fresh at low ones.
	BatchRows int
	BatchWait time.Duration
	// RetentionDays is how many days before today (UTC) the delivery log
	// keeps: older day partitions of attempts and events are dropped, so a
	// row stays at least RetentionDays days. The log is what replay and
	// recover read, so 30 days lets them reach a month back; the 3650 (ten
	// years) limit catches a typo such as a number of hours.
	RetentionDays int
	// RetentionInterval is how often expired partitions are looked for,
	// besides once at start. Partitions are a day wide, so hourly drops a
	// day at most an hour late for one system.parts query an hour. Below
	// 1m is churn; above 24h a day could wait more than a day to go.
	RetentionInterval time.Duration
}

// LoadConfig reads flags and SLUICE_* variables and validates the result.
func LoadConfig(args []string, env config.LookupEnv) (Config, error) {
	return service.Load(Name, args, env, register)
}

// Knobs lists every setting, for documentation.
func Knobs() []config.Knob { return service.Knobs(register) }

func register(c *Config, l *config.Loader) {
	c.Common.Register(l, Name)
	c.ClickHouse.Register(l)
	l.String(&c.Group, "group", "sluice-logwriter", "Kafka consumer group of the logwriters")
	l.Int(&c.BatchRows, "batch-rows", 10000, "rows per ClickHouse insert at most")
	l.Duration(&c.BatchWait, "batch-wait", time.Second, "how long the first row of a batch may wait for the insert")
	l.Int(&c.RetentionDays, "retention-days", 30,
		"days of delivery log kept before today (UTC); older day partitions are dropped")
	l.Duration(&c.RetentionInterval, "retention-interval", time.Hour,
		"how often expired day partitions are looked for (also once at start)")
}

// Validate checks every setting.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.ClickHouse.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("group must not be empty"))
	}
	// 1,000,000 rows of ~1 KiB is the most a batch may hold in memory.
	if c.BatchRows < 1 || c.BatchRows > 1_000_000 {
		errs = append(errs, fmt.Errorf("batch-rows must be between 1 and 1000000, got %d", c.BatchRows))
	}
	if c.BatchWait < time.Millisecond || c.BatchWait > time.Minute {
		errs = append(errs, fmt.Errorf("batch-wait must be between 1ms and 1m, got %v", c.BatchWait))
	}
	if c.RetentionDays < 1 || c.RetentionDays > 3650 {
		errs = append(errs, fmt.Errorf("retention-days must be between 1 and 3650, got %d", c.RetentionDays))
	}
	if c.RetentionInterval < time.Minute || c.RetentionInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("retention-interval must be between 1m and 24h, got %v", c.RetentionInterval))
	}
	return errors.Join(errs...)
}
