package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/health"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/service"
)

func TestShutdownContextOutlivesRunContextByTheTimeout(t *testing.T) {
	rt, err := service.Start("test", service.Common{OpsAddr: "127.0.0.1:0", LogLevel: "info",
		ShutdownTimeout: 200 * time.Millisecond}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	work, cancel := rt.ShutdownContext(ctx)
	defer cancel()

	select {
	case <-work.Done():
		t.Fatal("work context ended while the run context is alive")
	case <-time.After(300 * time.Millisecond): // longer than the timeout: it must not run from creation
	}
	stop()
	if work.Err() != nil {
		t.Fatal("work context ended the moment the run context did")
	}
	select {
	case <-work.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("work context still alive long after the shutdown timeout")
	}
}

func TestRunDrainsReadinessAndStopsWhenWorkersReturn(t *testing.T) {
	rt, err := service.Start("test", service.Common{OpsAddr: "127.0.0.1:0", LogLevel: "info",
		ShutdownTimeout: time.Second}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	workerSawEnd := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- rt.Run(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			close(workerSawEnd)
			return nil
		})
	}()
	stop()
	<-workerSawEnd
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its worker did")
	}
}

func TestCommonValidate(t *testing.T) {
	kafka := kafkax.Config{Brokers: []string{"127.0.0.1:9092"}}
	for _, tc := range []struct {
		desc string
		c    service.Common
		ok   bool
	}{
		{"valid", service.Common{Kafka: kafka, OpsAddr: ":8081", ShutdownTimeout: time.Second, StuckAfter: time.Minute}, true},
		{"no brokers", service.Common{OpsAddr: ":8081", ShutdownTimeout: time.Second, StuckAfter: time.Minute}, false},
		{"empty ops address", service.Common{Kafka: kafka, ShutdownTimeout: time.Second, StuckAfter: time.Minute}, false},
		{"zero shutdown timeout", service.Common{Kafka: kafka, OpsAddr: ":8081", StuckAfter: time.Minute}, false},
		{"stuck-after below 30s", service.Common{Kafka: kafka, OpsAddr: ":8081", ShutdownTimeout: time.Second, StuckAfter: 29 * time.Second}, false},
		{"stuck-after above an hour", service.Common{Kafka: kafka, OpsAddr: ":8081", ShutdownTimeout: time.Second, StuckAfter: 61 * time.Minute}, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := tc.c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCloseReleasesTheOpsPortOfAServiceThatNeverRan(t *testing.T) {
	rt, err := service.Start("test", service.Common{OpsAddr: "127.0.0.1:0", LogLevel: "info",
		ShutdownTimeout: time.Second}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addr := rt.Ops.Addr()
	rt.Close(context.Background())
	again, err := service.Start("test", service.Common{OpsAddr: addr, LogLevel: "info",
		ShutdownTimeout: time.Second}, io.Discard)
	if err != nil {
		t.Fatalf("the ops port %s is still taken after Close: %v", addr, err)
	}
	again.Close(context.Background())
}

func TestAwaitWaitsOutAFailingDependency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := health.NewRegistry(time.Minute, nil)
		stage := reg.Stage("logwriter")
		log := slog.New(slog.DiscardHandler)
		calls := 0
		done := make(chan error, 1)
		go func() {
			done <- service.Await(t.Context(), stage, log, "clickhouse", func(context.Context) error {
				calls++
				if calls <= 5 {
					return errors.New("dial tcp 127.0.0.1:19000: connection refused")
				}
				return nil
			})
		}()
		synctest.Wait()
		err := reg.Ready()
		if err == nil || !strings.Contains(err.Error(), "waiting: clickhouse: dial tcp 127.0.0.1:19000: connection refused") {
			t.Fatalf("while the dependency fails, Ready() = %v", err)
		}
		// Backoff doubles from 100 ms: five failures wait about 0.1+0.2+0.4+0.8+1.6 s.
		time.Sleep(10 * time.Second)
		select {
		case err := <-done:
			if err != nil || calls != 6 {
				t.Fatalf("Await = %v after %d calls, want nil after 6", err, calls)
			}
		default:
			t.Fatalf("Await still waiting after 10 s and %d calls", calls)
		}
	})
}

func TestAwaitStopsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := health.NewRegistry(time.Minute, nil)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- service.Await(ctx, reg.Stage("router"), slog.New(slog.DiscardHandler), "kafka",
				func(context.Context) error { return errors.New("unreachable") })
		}()
		time.Sleep(time.Hour) // an hour of failures: still retrying, never giving up
		select {
		case err := <-done:
			t.Fatalf("Await gave up on its own: %v", err)
		default:
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Await after cancel = %v, want context.Canceled", err)
		}
	})
}

// TestAwaitReturnsARefusalAtOnce: credentials or a certificate the cluster
// refuses will not get better by waiting; Await returns the refusal on the
// first try, and AwaitFailed hands it to Run's caller, while a stop during
// the wait stays a clean stop.
func TestAwaitReturnsARefusalAtOnce(t *testing.T) {
	for _, refusal := range []error{
		fmt.Errorf("listing topics: %w", &kafkax.AuthError{Dependency: "kafka", What: `SASL SCRAM-SHA-512 authentication as "sluice" refused by 127.0.0.1:19094`,
			Check: []string{"SLUICE_KAFKA_SASL_USERNAME"}}),
		&clickhousex.AuthError{Dependency: "clickhouse", What: `authentication as "sluice" refused by 127.0.0.1:9440`},
	} {
		synctest.Test(t, func(t *testing.T) {
			reg := health.NewRegistry(time.Minute, nil)
			calls := 0
			err := service.Await(t.Context(), reg.Stage("config"), slog.New(slog.DiscardHandler), "kafka topics",
				func(context.Context) error { calls++; return refusal })
			if calls != 1 || err == nil || !strings.Contains(err.Error(), "refused by 127.0.0.1:") {
				t.Fatalf("Await = %v after %d tries, want the refusal after one", err, calls)
			}
			if got := service.AwaitFailed(t.Context(), err); got != err {
				t.Fatalf("AwaitFailed = %v, want the refusal", got)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := service.AwaitFailed(ctx, context.Canceled); err != nil {
		t.Fatalf("AwaitFailed after a stop = %v, want nil (a clean stop)", err)
	}
}
