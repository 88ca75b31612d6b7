// Package kafkax is the only place Sluice builds Kafka clients. Every franz-go
// option that differs from the library default is set here, with the reason,
// so producers and consumers across services behave the same way.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/tlsconf"
)

// ErrNoBrokers is returned when a Config names no bootstrap broker.
var ErrNoBrokers = errors.New("kafka: no bootstrap brokers configured")

// Config says how to reach the cluster. Services embed it in their own Config.
type Config struct {
	// Brokers are the bootstrap servers, host:port.
	Brokers []string
	// ClientID names this process in broker logs and quotas.
	ClientID string
	// TLS encrypts the connections (SLUICE_KAFKA_TLS_*).
	TLS tlsconf.Config
	// SASL authenticates them (SLUICE_KAFKA_SASL_*).
	SASL SASL
	// Hooks are added to every client built from this Config: the service
	// Runtime sets franz-go's kotel tracing and metrics hooks here
	// (Instrument). Not a setting: set in code only.
	Hooks []kgo.Hook
}

// Validate reports a missing or malformed broker list, and TLS and SASL
// settings that cannot work: a certificate without its key, files that do
// not exist or do not parse, an unknown mechanism, a mechanism without its
// credentials. Each error names the variable to fix.
func (c Config) Validate() error {
	if err := c.validateBrokers(); err != nil {
		return err
	}
	if err := c.tls().Validate(); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return c.SASL.validate(c.TLS.Enabled)
}

// tls is the TLS settings under their variables' names, also when the
// Config was built in code rather than registered.
func (c Config) tls() tlsconf.Config { return c.TLS.Named("kafka") }

func (c Config) validateBrokers() error {
	if len(c.Brokers) == 0 {
		return ErrNoBrokers
	}
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" {
			return fmt.Errorf("kafka: broker %q is not host:port", b)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("kafka: broker %q has no valid port", b)
		}
	}
	return nil
}

// base is the options of every client: brokers, client id, TLS and SASL.
// It validates c first, so every builder refuses what Validate refuses.
func (c Config) base() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	tc, err := c.tls().Build()
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if tc != nil {
		// kgo.DialTLSConfig's dialer, plus the address kept with a failed
		// handshake's error so Fatal can name the broker (fatal.go).
		opts = append(opts, kgo.Dialer(tlsDialer(c.tls(), tc)))
	}
	mech, err := c.SASL.build()
	if err != nil {
		return nil, err
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	if len(c.Hooks) > 0 {
		opts = append(opts, kgo.WithHooks(c.Hooks...))
	}
	return opts, nil
}

// ProducerOptions are the options of every producing client. franz-go's
// defaults already give an idempotent producer with acks=all, which is what
// "a 202 means durable" needs; the overrides:
func ProducerOptions() []kgo.Opt {
	return []kgo.Opt{
		// acks=all is the default; stated so no one "optimises" it away: an
		// acknowledged event must survive the loss of the leader.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// The default 10 ms linger would sit inside every HTTP 202 and every
		// hop of a delivery (DESIGN §9: p50 ≤ 10 ms end to end). Batching
		// still happens while earlier requests are in flight.
		kgo.ProducerLinger(0),
		// Deliveries and attempts are small JSON and compress well; zstd
		// halves broker disk and network for little CPU.
		kgo.ProducerBatchCompression(kgo.ZstdCompression(), kgo.Lz4Compression(), kgo.NoCompression()),
		// A record that cannot be produced in this time surfaces as an error
		// to the caller (HTTP 503, or a redelivery) instead of hanging.
		kgo.RecordDeliveryTimeout(30 * time.Second),
	}
}

// NewProducer returns an idempotent, acks=all producer. extra options are
// appended (and so override) the shared ones.
func NewProducer(cfg Config, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := cfg.base()
	if err != nil {
		return nil, err
	}
	opts = append(opts, ProducerOptions()...)
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("building kafka producer: %w", err)
	}
	return cl, nil
}

// ConsumerOptions are the options of every group consumer.
func ConsumerOptions(group string, topics ...string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		// Routers write in transactions; an aborted batch must never be
		// delivered (DESIGN §5).
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// At-least-once lives in the types: only records the caller marked
		// done (MarkCommitRecords / MarkCommitOffsets) are committed, both
		// periodically and in the blocking commit franz-go makes when
		// partitions are revoked.
		kgo.AutoCommitMarks(),
		// Committing every 1 s (default 5 s) shrinks the window a crash can
		// redeliver, for one small request per second per consumer.
		kgo.AutoCommitInterval(time.Second),
		// Rebalances wait until the caller has finished what it polled
		// (AllowRebalance), so it never commits partitions it lost.
		kgo.BlockRebalanceOnPoll(),
		// The cooperative-sticky balancer moves only the partitions that must
		// move, so a sender scaling out does not stop every partition.
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		sessionTimeout,
		// A partition resumed after a pause (a retry tier's head came due)
		// is fetched only once the fetch in flight returns; with franz-go's
		// 5 s default an idle consumer would deliver retries up to 5 s late.
		// 500 ms costs an idle consumer two empty fetches a second.
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
}

// sessionTimeout: a member killed without leaving keeps its partitions
// until the broker stops hearing its heartbeats (every 3 s). franz-go's
// 45 s default would stall those partitions' deliveries that long after a
// crash; 15 s is five missed heartbeats, still far above a GC pause or a
// busy broker's stall.
var sessionTimeout = kgo.SessionTimeout(15 * time.Second)

// NewConsumer returns a read_committed group consumer that commits only
// marked records. extra options are appended to the shared ones.
func NewConsumer(cfg Config, group string, topics []string, extra ...kgo.Opt) (*kgo.Client, error) {
	if group == "" || len(topics) == 0 {
		return nil, errors.New("kafka: consumer needs a group and at least one topic")
	}
	opts, err := cfg.base()
	if err != nil {
		return nil, err
	}
	opts = append(opts, ConsumerOptions(group, topics...)...)
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("building kafka consumer for group %s: %w", group, err)
	}
	return cl, nil
}

// NewTransactSession returns a transactional consume-process-produce session
// for exactly-once stages (the router): records produced and offsets
// consumed commit or abort together.
func NewTransactSession(cfg Config, transactionalID, group string, topics []string, extra ...kgo.Opt) (*kgo.GroupTransactSession, error) {
	opts, err := cfg.base()
	if err != nil {
		return nil, err
	}
	opts = append(opts, ProducerOptions()...)
	opts = append(opts,
		kgo.TransactionalID(transactionalID),
		// A transaction holds read_committed readers back; one that stalls
		// longer than this is aborted by the broker rather than blocking
		// deliveries for the 60 s default.
		kgo.TransactionTimeout(20*time.Second),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		sessionTimeout,
		// A partition resumed once its dedup state is rebuilt is fetched
		// only when the fetch in flight returns: franz-go's 5 s default
		// would hold a newly assigned partition's events that long.
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	opts = append(opts, extra...)
	s, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, fmt.Errorf("building transactional session %s: %w", transactionalID, err)
	}
	return s, nil
}

// NewClient returns a plain client (no group, no producer tuning) for direct
// partition reads such as materialising a compacted topic.
func NewClient(cfg Config, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := cfg.base()
	if err != nil {
		return nil, err
	}
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("building kafka client: %w", err)
	}
	return cl, nil
}

// NewAdmin returns an admin client over a plain client. Closing the admin
// client closes the underlying one.
func NewAdmin(cfg Config) (*kadm.Client, error) {
	cl, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// Ping checks that a broker answers; used by readiness probes.
func Ping(ctx context.Context, cl *kgo.Client) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("pinging kafka: %w", err)
	}
	return nil
}

// Register binds the connection settings to flags and SLUICE_KAFKA_*
// variables: brokers and client id, SLUICE_KAFKA_TLS_* and
// SLUICE_KAFKA_SASL_*.
func (c *Config) Register(l *config.Loader, service string) {
	l.StringList(&c.Brokers, "kafka-brokers", []string{"127.0.0.1:19092"},
		"Kafka bootstrap servers, comma-separated host:port (the default is the dev stack's)")
	l.String(&c.ClientID, "kafka-client-id", "sluice-"+service, "client id this process shows the brokers")
	c.TLS.Register(l, "kafka", "Kafka")
	c.SASL.register(l)
}

// PollWait bounds how long a stage's loop waits in one poll for records, so
// the loop comes round (package health's Beat) while its partitions are
// idle; an empty poll costs nothing on the wire, it only returns what the
// client has buffered.
const PollWait = 5 * time.Second

// PollContext is ctx bounded by PollWait, for one poll.
func PollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, PollWait)
}

// FetchErrors calls fn for every error of fs except the poll's own timeout
// or cancellation (which franz-go reports as an error fetch): an idle poll
// that ran out its PollWait is not a fault.
func FetchErrors(fs kgo.Fetches, fn func(topic string, partition int32, err error)) {
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		fn(t, p, err)
	})
}
