// Command sluice-chaos is the fault suite behind `make chaos` (package
// loadtest/chaos). It must run against a dev stack of its own, never the
// shared one, because it kills the broker and freezes ClickHouse: dev/chaos.sh
// sets the ports and the state directory and starts and stops that stack.
// It prints progress and the report, writes the report to the results
// directory (and, with -doc, to docs/reliability.md), and exits 1 if the
// run failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/loadtest/chaos"
)

func main() {
	repo := flag.String("repo", ".", "the repository root")
	results := flag.String("results", "loadtest/results", "directory of the reports")
	doc := flag.String("doc", "", "also write the report into this Markdown file (docs/reliability.md)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *repo, *results, *doc); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-chaos:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Printf("%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// sharedPorts are the default dev stack's, which other people's tests use.
var sharedPorts = map[string]string{"SLUICE_DEV_KAFKA_PORT": "19092", "SLUICE_DEV_CLICKHOUSE_PORT": "19000"}

func run(ctx context.Context, repo, results, doc string) error {
	for k, shared := range sharedPorts {
		if v := os.Getenv(k); v == "" || v == shared {
			return fmt.Errorf("%s is %q: the suite kills the broker and freezes ClickHouse, so it runs only on a stack of its own (make chaos sets one up)", k, v)
		}
	}
	commit := gitCommit(repo)
	su, err := chaos.New(ctx, chaos.Config{Repo: repo, Logf: logf})
	if su != nil {
		defer su.Close()
	}
	if err != nil {
		return err
	}
	rep := su.Run(ctx)
	rep.Commit = commit
	md := rep.Markdown()
	fmt.Println()
	fmt.Print(md)
	if err := os.MkdirAll(filepath.Join(repo, results), 0o755); err != nil {
		return err
	}
	name := filepath.Join(results, "chaos-"+rep.Started.UTC().Format("20060102-150405")+".md")
	if err := os.WriteFile(filepath.Join(repo, name), []byte(md), 0o644); err != nil {
		return err
	}
	if doc != "" {
		if err := os.WriteFile(filepath.Join(repo, doc), []byte(page(md)), 0o644); err != nil {
			return err
		}
	}
	logf("report in %s", name)
	if rep.Failed() {
		return fmt.Errorf("%d failures", len(rep.Failures))
	}
	return nil
}

// gitCommit is HEAD's short hash, marked when the tree has changes.
func gitCommit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}

// page is docs/reliability.md: what the suite does and how to read it,
// then the latest report.
func page(report string) string {
	return `# Reliability

The latest ` + "`make chaos`" + ` report, written by ` + "`loadtest/cmd/sluice-chaos`" + ` (DESIGN §9, §10).
Reproduce it with ` + "`make chaos`" + ` (under 8 minutes); it runs on a Kafka and ClickHouse of its own
(ports 29092, 29093, 29000, 28123, state in ` + "`~/.cache/sluice/chaos-stack`" + `), never on the shared dev stack.

Under steady load from three producers (single events over HTTP, batches of 5 over HTTP, records
published to Kafka; about 13 events/s over 2 tenants and 13 endpoints, every endpoint on a retry
schedule of 1, 2 and 5 s with a 5 s timeout), the suite injects each fault in turn and waits for full
recovery: every service answers ` + "`/readyz`" + ` and ` + "`/healthz`" + ` with 200, and a probe event sent after
the fault is delivered to its endpoint and logged in ClickHouse. It only ever brings back what it
killed or stopped; a service that exits by itself fails the run. Producers retry connection errors,
timeouts and 5xx like a real client; an event counts as accepted only on a 202 (or its batch result,
or a duplicate answer to a retry) or a Kafka acknowledgement.

Columns, per stage (events are counted under the stage during which they were first sent):
- **deliveries**: (event, endpoint) pairs the subscriptions call for.
- **delivered**: arrived at the receiver (answered 2xx); **dead**: in the run's ` + "`sluice.dead`" + ` with a
  ` + "`dead_reason`" + `; **missing**: neither (must be 0).
- **duplicates**: arrivals of a pair beyond its first. **In window**: within the uncommitted window,
  a redelivery the design allows: the first arrival finished at most 15 s before a sender's or the
  broker's kill (the sender commits every 1 s at the watermark, which may wait up to the 5 s
  endpoint timeout plus the 5 s queue wait) and the second came after the kill and at most 30 s after
  that stage's recovery.
- **recovery**: from the fault to full recovery; "restored" is when the suite had brought back what
  it killed or stopped.

Attempts: per (event, endpoint), the rows of ` + "`attempts FINAL`" + ` with an HTTP outcome (success,
http_error, timeout, network_error) must equal the requests the receiver saw. The only difference
allowed is a request in flight when the sender was killed (arrived within 6 s before the kill): the
sender records an attempt after its answer, so a killed sender never records it.

` + report
}
