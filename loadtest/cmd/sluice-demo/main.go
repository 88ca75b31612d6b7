// Command sluice-demo is what `make run` shows: it starts a webhook receiver
// that prints what it is sent, creates a tenant, an API key and an endpoint
// pointing at the receiver through the HTTP API, sends sample events, waits
// for their webhooks and their attempt rows in ClickHouse, prints both, and
// keeps receiving until interrupted.
//
// The events are published to sluice.events in the Kafka producer contract
// (as kcat would); the router fans them out. The HTTP events API comes next.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
)

type settings struct {
	apiURL       string
	adminKey     string
	kafka        kafkax.Config
	clickhouse   clickhousex.Config
	topicPrefix  string
	receiverAddr string
	events       int
	wait         time.Duration
}

func main() {
	var s settings
	l := config.NewLoader("sluice-demo", os.LookupEnv)
	l.String(&s.apiURL, "api-url", "http://127.0.0.1:8080", "base URL of the ingest API")
	l.String(&s.adminKey, "admin-key", "", "the ingest service's admin key")
	s.kafka.Register(l, "demo")
	s.clickhouse.Register(l)
	l.String(&s.topicPrefix, "topic-prefix", topics.DefaultPrefix, "prefix of every Kafka topic name")
	l.String(&s.receiverAddr, "receiver-addr", "127.0.0.1:9900", "where the demo receiver listens")
	l.Int(&s.events, "events", 3, "sample events to send")
	l.Duration(&s.wait, "wait", time.Minute, "how long to wait for the webhooks and their log rows")
	if err := l.ParseOrAnswer(os.Args[1:], os.Stdout); err != nil {
		if config.Answered(err) {
			return
		}
		fmt.Fprintln(os.Stderr, "sluice-demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, s); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "sluice-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s settings) error {
	names := topics.NewNames(s.topicPrefix)
	recv, err := receiver.Start(s.receiverAddr, receiver.OnDelivery(func(d receiver.Delivery) {
		fmt.Printf("\n→ webhook received by endpoint %q\n  webhook-id: %s\n  webhook-timestamp: %s\n  webhook-signature: verified with the Standard Webhooks library\n  body: %s\n",
			d.Endpoint, d.WebhookID, d.Timestamp, d.Body)
	}))
	if err != nil {
		return err
	}
	defer recv.Close()

	c := apiClient{base: s.apiURL}
	var tenant struct{ ID string }
	if err := c.call(ctx, "POST", "/v1/tenants", s.adminKey, map[string]any{"name": "Demo Inc."}, &tenant); err != nil {
		return err
	}
	var key struct{ Key string }
	if err := c.call(ctx, "POST", "/v1/tenants/"+tenant.ID+"/api-keys", s.adminKey, map[string]any{"name": "demo"}, &key); err != nil {
		return err
	}
	var ep struct {
		ID, Tenant, URL, Secret string
		Events                  []string
	}
	if err := c.call(ctx, "POST", "/v1/endpoints", key.Key, map[string]any{
		"url": recv.URL("demo"), "description": "make run's demo receiver", "events": []string{"order.*"},
	}, &ep); err != nil {
		return err
	}
	fmt.Printf("through the API: tenant %s, API key %s…, endpoint %s → %s (events %v)\n",
		tenant.ID, key.Key[:10], ep.ID, ep.URL, ep.Events)
	// The receiver answers only webhooks signed with the endpoint's secret.
	if err := recv.SetSecret("demo", ep.Secret); err != nil {
		return fmt.Errorf("the API's endpoint secret: %w", err)
	}

	producer, err := kafkax.NewProducer(s.kafka)
	if err != nil {
		return err
	}
	defer producer.Close()
	var eventIDs []string
	for i := range s.events {
		id := ids.New(ids.Event)
		data := fmt.Appendf(nil, `{"order_id":"ord_%d","amount":%d,"currency":"EUR"}`, 1000+i, 1999+i*100)
		rec := &kgo.Record{Topic: names.Events, Key: eventrecord.Key(ep.Tenant, id), Value: data, Headers: []kgo.RecordHeader{
			{Key: eventrecord.HeaderTenant, Value: []byte(ep.Tenant)},
			{Key: eventrecord.HeaderType, Value: []byte("order.created")},
			{Key: eventrecord.HeaderID, Value: []byte(id)},
		}}
		if err := producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return fmt.Errorf("sending sample event: %w", err)
		}
		eventIDs = append(eventIDs, id)
		fmt.Printf("sent event %s (order.created) to %s\n", id, names.Events)
	}

	wctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	for len(recv.Tally("demo", eventIDs).Missing) > 0 {
		if err := sleep(wctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("the webhooks did not arrive within %v: is the sender running?", s.wait)
		}
	}
	if err := printAttempts(wctx, s.clickhouse, ep.Tenant, eventIDs); err != nil {
		return err
	}
	fmt.Println("\nThe demo receiver keeps listening; press Ctrl-C to stop everything.")
	<-ctx.Done()
	return nil
}

func printAttempts(ctx context.Context, cfg clickhousex.Config, tenant string, eventIDs []string) error {
	conn, err := clickhousex.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := "SELECT event_id, attempt_number, outcome, status_code, latency_us, started_at FROM " + cfg.Database +
		".attempts FINAL WHERE tenant_id = ? AND has(?, event_id) ORDER BY started_at_us"
	var lastErr error
	for {
		rows, err := conn.Query(ctx, q, tenant, eventIDs)
		lastErr = err
		if err == nil {
			type row struct {
				event, outcome string
				n              uint32
				status         uint16
				latency        int64
				at             time.Time
			}
			var got []row
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.event, &r.n, &r.outcome, &r.status, &r.latency, &r.at); err != nil {
					rows.Close()
					return err
				}
				got = append(got, r)
			}
			rows.Close()
			if len(got) >= len(eventIDs) {
				fmt.Printf("\nattempt rows in ClickHouse (%s.attempts):\n", cfg.Database)
				fmt.Printf("  %-30s %-7s %-8s %-6s %-10s %s\n", "event_id", "attempt", "outcome", "status", "latency", "started_at")
				for _, r := range got {
					fmt.Printf("  %-30s %-7d %-8s %-6d %-10s %s\n", r.event, r.n, r.outcome, r.status,
						time.Duration(r.latency)*time.Microsecond, r.at.Format(time.RFC3339))
				}
				return nil
			}
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("the attempt rows did not reach ClickHouse in time: is the logwriter running? (last query error: %v)", lastErr)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// apiClient calls the ingest API with JSON.
type apiClient struct{ base string }

func (c apiClient) call(ctx context.Context, method, path, key string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, raw)
	}
	return json.Unmarshal(raw, out)
}
