package kafkax

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TopicSpec is a topic as Sluice wants it created.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16
	// Configs are topic-level settings such as cleanup.policy.
	Configs map[string]string
}

// EnsureTopics creates the topics that do not exist yet. Existing topics are
// never altered: partition counts and configs of a live topic are an
// operator's decision, not a side effect of a deploy.
func EnsureTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec) error {
	var errs []error
	for _, s := range specs {
		configs := make(map[string]*string, len(s.Configs))
		for k, v := range s.Configs {
			configs[k] = &v
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, s.ReplicationFactor, configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("creating topic %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// DeleteTopics deletes topics, ignoring ones already gone. Tests use it to
// clean up after themselves.
func DeleteTopics(ctx context.Context, adm *kadm.Client, names ...string) error {
	resps, err := adm.DeleteTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("deleting topics: %w", err)
	}
	var errs []error
	for _, r := range resps.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("deleting topic %s: %w", r.Topic, r.Err))
		}
	}
	return errors.Join(errs...)
}

// ErrTopicsMissing is returned by CheckTopics when a topic does not exist.
var ErrTopicsMissing = errors.New("kafka: topics missing")

// CheckTopics reports which of names do not exist, for readiness and for
// services started with topic creation switched off.
func CheckTopics(ctx context.Context, adm *kadm.Client, names ...string) error {
	td, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	var missing []string
	for _, n := range names {
		// Only an unknown topic is missing: one created a moment ago may
		// still report LEADER_NOT_AVAILABLE, and it exists.
		if d, ok := td[n]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v", ErrTopicsMissing, missing)
	}
	return nil
}

// WaitTopics waits until every named topic exists and each of its
// partitions has a leader: creation returns before the broker can serve a
// new topic, and a client using it at once would see transient errors.
func WaitTopics(ctx context.Context, adm *kadm.Client, names ...string) error {
	for {
		td, err := adm.ListTopics(ctx, names...)
		if err == nil && topicsServable(td, names) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for topics %v to have leaders: %w (last error: %v)", names, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func topicsServable(td kadm.TopicDetails, names []string) bool {
	for _, n := range names {
		d, ok := td[n]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return false
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}
