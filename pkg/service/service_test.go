package service_test

import (
	"context"
	"io"
	"testing"
	"time"

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
		{"valid", service.Common{Kafka: kafka, OpsAddr: ":8081", ShutdownTimeout: time.Second}, true},
		{"no brokers", service.Common{OpsAddr: ":8081", ShutdownTimeout: time.Second}, false},
		{"empty ops address", service.Common{Kafka: kafka, ShutdownTimeout: time.Second}, false},
		{"zero shutdown timeout", service.Common{Kafka: kafka, OpsAddr: ":8081"}, false},
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
