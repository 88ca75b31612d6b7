// Command sluice-bench is the load test behind `make bench` and `make
// bench-quick` (DESIGN §9): it starts the three services against the dev
// stack (which must be up), runs the scenarios P0 to P7 (or, with -only,
// one that needs no other), prints progress, and writes the report as
// JSON and Markdown to the results directory (and, with -doc, to
// docs/benchmarks.md).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/loadtest/bench"
	"github.com/sluicehq/sluice/pkg/topics"
)

func main() {
	quick := flag.Bool("quick", false, "the short run of make bench-quick")
	repo := flag.String("repo", ".", "the repository root")
	results := flag.String("results", "loadtest/results", "directory of the reports")
	doc := flag.String("doc", "", "also write the report into this Markdown file (docs/benchmarks.md)")
	only := flag.String("only", "", fmt.Sprintf("run this scenario alone (one of %v) instead of all; its report is not written to -doc", bench.Scenarios))
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *only != "" {
		*doc = ""
	}
	if err := run(ctx, *repo, *results, *doc, *quick, *only); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Printf("%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, repo, results, doc string, quick bool, only string) error {
	if only != "" && !slices.Contains(bench.Scenarios, only) {
		return fmt.Errorf("-only %s: these scenarios run alone: %v", only, bench.Scenarios)
	}
	size := bench.Full
	if quick {
		size = bench.Quick
	}
	rep := &bench.Report{Started: time.Now(), Quick: quick}
	// Partition counts of a small production: deliveries as many as a
	// handful of senders could share.
	s, err := bench.StartStack(ctx, repo, bench.StackOptions{Name: "bench",
		Partitions: topics.Partitions{Events: 6, Deliveries: 12, Retry: 6, Dead: 3, Attempts: 6, EventLog: 6}}, logf)
	if s != nil {
		defer s.Close()
	}
	if err != nil {
		return err
	}
	rep.Machine = bench.Machine(s.ClickHouseVersion(ctx))
	r, err := bench.NewRunner(s, size, logf)
	if err != nil {
		return err
	}
	defer r.Close()
	if only != "" {
		if err := r.RunOne(ctx, rep, only); err != nil {
			return err
		}
	} else {
		r.Run(ctx, rep)
	}
	rep.Seconds = time.Since(rep.Started).Seconds()

	md := rep.Markdown()
	fmt.Println()
	fmt.Print(md)
	if err := os.MkdirAll(filepath.Join(repo, results), 0o755); err != nil {
		return err
	}
	stamp := rep.Started.UTC().Format("20060102-150405")
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(repo, results, "bench-"+stamp+".json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(repo, results, "bench-"+stamp+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	if doc != "" {
		page := "# Benchmarks\n\nThe latest `make bench` report, written by `loadtest/cmd/sluice-bench` (DESIGN §9). " +
			"Every figure is measured against the raw fasthttp POST rate of the same machine in the same run (P0). " +
			"Each scenario also counts deliveries at the verifying receiver: missing must be zero.\n\n" + md
		if err := os.WriteFile(filepath.Join(repo, doc), []byte(page), 0o644); err != nil {
			return err
		}
	}
	logf("reports in %s", filepath.Join(results, "bench-"+stamp+".{json,md}"))
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d scenarios failed", len(rep.Failures))
	}
	return nil
}
