package bench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// Markdown renders the report as a table with the machine it ran on.
func (rep *Report) Markdown() string {
	var b strings.Builder
	kind := "full (`make bench`)"
	if rep.Quick {
		kind = "quick (`make bench-quick`)"
	}
	fmt.Fprintf(&b, "Run %s, %s, %.0f s.\n\nMachine: %s\n\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), kind, rep.Seconds, rep.Machine)
	b.WriteString("| scenario | what | figure | target | meets | sent | missing | duplicates |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		meets := "—"
		if r.Meets != nil {
			meets = map[bool]string{true: "yes", false: "**no**"}[*r.Meets]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %d | %d |\n", r.ID, r.Name, r.Figure, r.Target, meets, r.Sent, r.Missing, r.Duplicates)
	}
	var notes []string
	for _, r := range rep.Results {
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("- %s: %s", r.ID, r.Note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	if len(rep.Failures) > 0 {
		b.WriteString("\nFailures:\n")
		for _, f := range rep.Failures {
			b.WriteString("- " + f + "\n")
		}
	}
	return b.String()
}

// Machine describes this machine: CPU model, cores, memory, Go, and the
// Kafka and ClickHouse the dev stack runs.
func Machine(clickhouse string) string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	ch := "ClickHouse " + clickhouse
	return fmt.Sprintf("%s, %d cores, %s, %s, Kafka 4.2.0 (KRaft, one broker), %s; the broker, ClickHouse, the three services and the driver (generator and receiver) share the cores",
		model, runtime.NumCPU(), mem, runtime.Version(), ch)
}
