package app_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/testenv"
)

// benchAttempt is an attempt of realistic size: 30-byte ids as the sender
// makes them, a 60-byte URL, a 100-byte response excerpt; about 380 bytes
// encoded.
func benchAttempt(i int, started time.Time, excerpt []byte) *sluicev1.Attempt {
	return &sluicev1.Attempt{
		SchemaVersion:   sluicev1.SchemaVersion,
		AttemptId:       fmt.Sprintf("att_01HZX3K9%018d", i),
		DeliveryId:      fmt.Sprintf("dlv_01HZX3K9%018d", i/2),
		TenantId:        fmt.Sprintf("ten_01HZX3K9%018d", i%50),
		EndpointId:      fmt.Sprintf("ep_01HZX3K9%018d", i%500),
		EventId:         fmt.Sprintf("evt_01HZX3K9%018d", i/4),
		EventType:       "order.created",
		AttemptNumber:   uint32(i%2 + 1),
		Outcome:         sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS,
		StatusCode:      200,
		StartedAtUs:     started.Add(time.Duration(i) * time.Microsecond).UnixMicro(),
		LatencyUs:       int64(20_000 + i%10_000),
		Url:             fmt.Sprintf("https://hooks.example.com/tenants/%03d/endpoints/%04d/webhook", i%50, i%500),
		ResponseExcerpt: excerpt,
		TraceId:         fmt.Sprintf("%032x", i+1),
		Origin:          sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
	}
}

// BenchmarkLogwriterRowsPerSecond measures the logwriter end to end on the
// real Kafka and ClickHouse: 200,000 attempts per op are produced first, then
// the clock runs from app.Run until ClickHouse holds them all. Start-up (the
// migrations, joining the group) is inside the figure, as it is for a
// logwriter catching up on a backlog after a restart.
func BenchmarkLogwriterRowsPerSecond(b *testing.B) {
	const rowsPerOp = 200_000
	k := testenv.NewKafka(b)
	ch := testenv.NewClickHouse(b)
	cfg := newConfig(b, k, ch)
	db := ch.Config.Database
	p := newProducer(b, k)

	total := rowsPerOp * b.N
	now := time.Now().UTC()
	excerpt := bytes.Repeat([]byte("x"), 100)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	produceStart := time.Now()
	const chunk = 10_000
	recs := make([]*kgo.Record, 0, chunk)
	for i := 0; i < total; i += chunk {
		recs = recs[:0]
		for j := i; j < min(i+chunk, total); j++ {
			v, err := proto.Marshal(benchAttempt(j, now, excerpt))
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, &kgo.Record{Topic: k.Names.Attempts, Partition: int32(j % partitions), Value: v})
		}
		if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			b.Fatalf("producing: %v", err)
		}
	}
	b.Logf("produced %d attempts in %v", total, time.Since(produceStart).Round(time.Millisecond))

	countAll := "SELECT count() FROM " + db + ".attempts"
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	lw := start(b, cfg)
	var firstRow time.Duration
	for {
		n, err := tryCount(ch, countAll)
		if err == nil && n > 0 && firstRow == 0 {
			firstRow = time.Since(began)
		}
		if err == nil && n >= uint64(total) {
			break
		}
		lw.failIfExited(b)
		if time.Since(began) > 2*time.Minute {
			b.Fatalf("%d of %d rows in ClickHouse after 2 minutes (err %v)", n, total, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(began)
	b.StopTimer()

	if n := count(b, ch, "SELECT uniqExact(attempt_id) FROM "+db+".attempts"); n != uint64(total) {
		b.Errorf("%d distinct attempt ids in ClickHouse, want %d", n, total)
	}
	lw.stop(b)
	rate := float64(total) / elapsed.Seconds()
	steady := float64(total) / (elapsed - firstRow).Seconds()
	b.ReportMetric(rate, "rows/s")
	b.Logf("%d rows in %v: %.0f rows/s from start (%.0f rows/s after the first row landed at %v); batch-rows %d, batch-wait %v",
		total, elapsed.Round(time.Millisecond), rate, steady, firstRow.Round(time.Millisecond), cfg.BatchRows, cfg.BatchWait)
}
