package charttest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/config"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
)

// managed are the settings the chart sets itself from first-class values
// (connections, secrets, ports, shutdown, topic prefix); a service's
// config map refuses them.
var managed = []string{
	"SLUICE_KAFKA_BROKERS", "SLUICE_TOPIC_PREFIX", "SLUICE_OPS_ADDR", "SLUICE_SHUTDOWN_TIMEOUT", "SLUICE_API_ADDR",
	"SLUICE_SECRETS_KEY", "SLUICE_ADMIN_KEY",
	"SLUICE_KAFKA_TLS", "SLUICE_KAFKA_TLS_CA_FILE", "SLUICE_KAFKA_TLS_CERT_FILE", "SLUICE_KAFKA_TLS_KEY_FILE",
	"SLUICE_KAFKA_TLS_SERVER_NAME", "SLUICE_KAFKA_SASL_MECHANISM", "SLUICE_KAFKA_SASL_USERNAME",
	"SLUICE_KAFKA_SASL_PASSWORD_FILE", "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE", "SLUICE_KAFKA_SASL_OAUTH_EXTENSIONS",
	"SLUICE_CLICKHOUSE_ADDRS", "SLUICE_CLICKHOUSE_DATABASE", "SLUICE_CLICKHOUSE_USERNAME", "SLUICE_CLICKHOUSE_PASSWORD",
	"SLUICE_CLICKHOUSE_PASSWORD_FILE", "SLUICE_CLICKHOUSE_TLS", "SLUICE_CLICKHOUSE_TLS_CA_FILE",
	"SLUICE_CLICKHOUSE_TLS_CERT_FILE", "SLUICE_CLICKHOUSE_TLS_KEY_FILE", "SLUICE_CLICKHOUSE_TLS_SERVER_NAME",
}

// refused are real settings the chart does not offer at all.
var refused = map[string]string{
	"SLUICE_INSECURE_DEV_SECRETS_KEY": "development only: seals endpoint secrets with a public key",
}

var serviceKnobs = map[string][]config.Knob{
	"ingest": ingest.Knobs(), "sender": sender.Knobs(), "logwriter": logwriter.Knobs(),
}

func envNames(knobs []config.Knob) []string {
	var out []string
	for _, k := range knobs {
		out = append(out, k.Env)
	}
	return out
}

// schemaConfigKeys lists the settings values.schema.json allows in the
// config map at path (e.g. sender.config).
func schemaConfigKeys(t *testing.T, path string) []string {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(mustRead(t, filepath.Join(chartDir, "values.schema.json")), &s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	node := s
	for _, p := range strings.Split(path, ".") {
		props, _ := node["properties"].(map[string]any)
		next, ok := props[p].(map[string]any)
		if !ok {
			t.Fatalf("values.schema.json has no %s", path)
		}
		node = next
	}
	if node["additionalProperties"] != false {
		t.Errorf("values.schema.json: %s allows any key; a misspelt setting would pass", path)
	}
	props, _ := node["properties"].(map[string]any)
	var keys []string
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestConfigKeysAreTheServicesKnobs: each service's config map in the
// schema allows exactly the service's settings in code, less those the
// chart manages or refuses. A new setting in code without a chart entry
// fails here.
func TestConfigKeysAreTheServicesKnobs(t *testing.T) {
	for svc, knobs := range serviceKnobs {
		t.Run(svc, func(t *testing.T) {
			var want []string
			for _, e := range envNames(knobs) {
				if !slices.Contains(managed, e) && refused[e] == "" {
					want = append(want, e)
				}
			}
			sort.Strings(want)
			got := schemaConfigKeys(t, svc+".config")
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("%s has the setting %s, which values.schema.json's %s.config does not allow: add it there (and to README's table), or to the chart-managed list if the chart sets it", svc, w, svc)
				}
			}
			for _, g := range got {
				if !slices.Contains(want, g) {
					t.Errorf("values.schema.json's %s.config allows %s, which is no setting of %s (or one the chart manages)", svc, g, svc)
				}
			}
		})
	}
}

// TestRenderedSettingsAreKnobs: every SLUICE_* variable the chart gives a
// service is one of its settings, so a
// misspelt managed variable fails here.
func TestRenderedSettingsAreKnobs(t *testing.T) {
	for _, file := range ciFiles(t) {
		r := render(t, readValues(t, file))
		for _, d := range all[*appsv1.Deployment](r) {
			c := d.Spec.Template.Spec.Containers[0]
			knobs := envNames(serviceKnobs[c.Name])
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "SLUICE_") && !slices.Contains(knobs, e.Name) {
					t.Errorf("%s: %s sets %s, which is no setting of %s", filepath.Base(file), d.Name, e.Name, c.Name)
				}
			}
		}
	}
}

// TestTopicsJobSettingsAreFlags builds sluice-topics and checks every
// SLUICE_* variable the Job sets (and its config map allows) against the
// settings its -help lists.
func TestTopicsJobSettingsAreFlags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sluice-topics")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sluice-topics")
	build.Dir = filepath.Join("..", "..", "pkg")
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building sluice-topics: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-help").Output()
	if err != nil {
		t.Fatalf("sluice-topics -help: %v", err)
	}
	flags := regexp.MustCompile(`\((SLUICE_[A-Z0-9_]+),`).FindAllStringSubmatch(string(out), -1)
	if len(flags) < 5 {
		t.Fatalf("sluice-topics -help lists %d settings:\n%s", len(flags), out)
	}
	var known []string
	for _, f := range flags {
		known = append(known, f[1])
	}
	for _, file := range ciFiles(t) {
		for _, j := range all[*batchv1.Job](render(t, readValues(t, file))) {
			for _, e := range j.Spec.Template.Spec.Containers[0].Env {
				if strings.HasPrefix(e.Name, "SLUICE_") && !slices.Contains(known, e.Name) {
					t.Errorf("%s: the topics Job sets %s, which sluice-topics does not read", filepath.Base(file), e.Name)
				}
			}
		}
	}
	for _, k := range schemaConfigKeys(t, "topics.config") {
		if !slices.Contains(known, k) || slices.Contains(managed, k) {
			t.Errorf("values.schema.json's topics.config allows %s, which is no free setting of sluice-topics", k)
		}
	}
}
