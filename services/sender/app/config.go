// Package app is the sender: it consumes sluice.deliveries, POSTs each
// delivery to its endpoint over fasthttp and records every attempt on
// sluice.attempts (DESIGN §6).
package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/service"
)

// Name is the service name in logs and metrics.
const Name = "sender"

// Config is everything the sender can be told.
type Config struct {
	service.Common
	// Group is the consumer group; sender replicas share the partitions.
	Group string
	// RequestTimeout bounds one HTTP attempt from dial to the last byte of
	// the response, for endpoints that set no timeout of their own.
	RequestTimeout time.Duration
	// MaxInFlight bounds concurrent HTTP requests of the whole process.
	MaxInFlight int
	// ResponseExcerpt is how much of a response body is kept for the log.
	ResponseExcerpt int
	// UserAgent is sent with every webhook.
	UserAgent string
}

// LoadConfig reads flags and SLUICE_* variables and validates the result.
func LoadConfig(args []string, env config.LookupEnv) (Config, error) {
	return service.Load(Name, args, env, register)
}

// Knobs lists every setting, for documentation.
func Knobs() []config.Knob { return service.Knobs(register) }

func register(c *Config, l *config.Loader) {
	c.Common.Register(l, Name)
	l.String(&c.Group, "group", "sluice-sender", "Kafka consumer group of the senders")
	l.Duration(&c.RequestTimeout, "request-timeout", 15*time.Second,
		"timeout of one webhook request for endpoints without their own")
	l.Int(&c.MaxInFlight, "max-in-flight", 256, "concurrent webhook requests of this process at most")
	l.Int(&c.ResponseExcerpt, "response-excerpt-bytes", 4096, "bytes of each response body kept for the log")
	l.String(&c.UserAgent, "user-agent", "Sluice-Webhooks/1", "User-Agent header of every webhook")
}

// Validate checks every setting.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
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
	// The excerpt travels in every attempt record; 64 KiB keeps those small.
	if c.ResponseExcerpt < 0 || c.ResponseExcerpt > 64<<10 {
		errs = append(errs, fmt.Errorf("response-excerpt-bytes must be between 0 and 65536, got %d", c.ResponseExcerpt))
	}
	if c.UserAgent == "" {
		errs = append(errs, errors.New("user-agent must not be empty"))
	}
	return errors.Join(errs...)
}
