package e2e_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

// TestREADMEDocumentsEverySetting keeps the README's configuration tables
// true: every setting of every service has a row with its real default.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// rows maps a variable to the default cells of the table rows naming it
	// (SLUICE_GROUP has one row per service).
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if strings.HasPrefix(name, config.EnvPrefix) {
			rows[name] = append(rows[name], strings.TrimSpace(cells[2]))
		}
	}
	for service, knobs := range map[string][]config.Knob{
		ingest.Name: ingest.Knobs(), sender.Name: sender.Knobs(), logwriter.Name: logwriter.Knobs(),
	} {
		for _, k := range knobs {
			want := "`" + k.Default + "`"
			if k.Default == "" {
				want = "(empty)"
			}
			found := false
			for _, cell := range rows[k.Env] {
				if strings.ReplaceAll(cell, "<service>", service) == want || sameDuration(cell, k.Default) {
					found = true
				}
			}
			if !found {
				t.Errorf("README: %s (%s) needs a row with default %s; rows found: %q", k.Env, service, want, rows[k.Env])
			}
		}
	}
}

// sameDuration reports whether a README cell such as `24h` names the same
// duration as a default printed the Go way (24h0m0s).
func sameDuration(cell, def string) bool {
	a, errA := time.ParseDuration(strings.Trim(cell, "`"))
	b, errB := time.ParseDuration(def)
	return errA == nil && errB == nil && a == b
}
