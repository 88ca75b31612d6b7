package charttest

import (
	"path/filepath"
	"strings"
	"testing"

	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// withValues returns minimal.yaml's values with overrides (YAML) merged on top.
func withValues(t *testing.T, base, overrides string) map[string]any {
	t.Helper()
	vals := readValues(t, filepath.Join(chartDir, "ci", base))
	var over map[string]any
	if err := yaml.Unmarshal([]byte(overrides), &over); err != nil {
		t.Fatalf("overrides: %v", err)
	}
	return chartutil.MergeTables(over, vals)
}

// TestBadValuesRefused: the schema and the chart's own checks refuse bad
// values, each with a message that says what is wrong and where.
func TestBadValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		desc, base, values string
		// want are substrings of the error, all required.
		want []string
	}{
		{"wrong type", "minimal.yaml", "sender: {replicas: two}",
			[]string{"/sender/replicas", "got string, want integer"}},
		{"unknown key", "minimal.yaml", "sender: {replica: 3}",
			[]string{"/sender", "additional properties 'replica' not allowed"}},
		{"unknown setting in config", "minimal.yaml", "sender: {config: {SLUICE_MAX_INFLIGHT: 10}}",
			[]string{"/sender/config", "'SLUICE_MAX_INFLIGHT' not allowed"}},
		{"a setting the chart manages, in config", "minimal.yaml", "ingest: {config: {SLUICE_KAFKA_BROKERS: 'x:9092'}}",
			[]string{"/ingest/config", "'SLUICE_KAFKA_BROKERS' not allowed"}},
		{"a sender setting given to the logwriter", "minimal.yaml", "logwriter: {config: {SLUICE_MAX_IN_FLIGHT: 10}}",
			[]string{"/logwriter/config", "'SLUICE_MAX_IN_FLIGHT' not allowed"}},
		{"bad enum", "minimal.yaml", "sender: {autoscaling: {mode: vpa}}",
			[]string{"/sender/autoscaling/mode", "'none', 'hpa', 'keda'"}},
		{"KEDA for ingest", "minimal.yaml", "ingest: {autoscaling: {mode: keda}}",
			[]string{"/ingest/autoscaling/mode", "'none', 'hpa'"}},
		{"bad SASL mechanism", "minimal.yaml", "kafka: {sasl: {mechanism: SCRAM-SHA-1}}",
			[]string{"/kafka/sasl/mechanism", "'SCRAM-SHA-512'"}},
		{"broker without port", "minimal.yaml", "kafka: {brokers: [kafka.kafka]}",
			[]string{"/kafka/brokers/0", "does not match pattern"}},
		{"both existingSecret and a value", "minimal.yaml", "secretsKey: {value: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}",
			[]string{"secretsKey: set either value or existingSecret.name, not both"}},
		{"both for a Kafka credential", "production.yaml", "kafka: {sasl: {password: {value: hunter2}}}",
			[]string{"kafka.sasl.password: set either value or existingSecret.name, not both"}},
		{"KEDA maxReplicas above the partitions", "minimal.yaml", "sender: {autoscaling: {mode: keda, maxReplicas: 30}}",
			[]string{"sender.autoscaling.maxReplicas 30 is above the 24 partitions", "topics.partitions.deliveries"}},
		{"HPA maxReplicas above the logwriter's partitions", "minimal.yaml", "logwriter: {autoscaling: {mode: hpa, maxReplicas: 25}}",
			[]string{"logwriter.autoscaling.maxReplicas 25 is above the 24 partitions", "attempts + topics.partitions.eventlog"}},
		{"more fixed senders than partitions", "minimal.yaml", "sender: {replicas: 30}",
			[]string{"sender.replicas 30 is above the 24 partitions"}},
		{"grace period inside the shutdown budget", "minimal.yaml", "terminationGracePeriodSeconds: 30",
			[]string{"terminationGracePeriodSeconds 30 must be above shutdownTimeoutSeconds + 5 = 30"}},
		{"no brokers", "minimal.yaml", "kafka: {brokers: []}",
			[]string{"kafka.brokers is required"}},
		{"no secrets key", "minimal.yaml", "secretsKey: {existingSecret: {name: ''}}",
			[]string{"secretsKey is required"}},
		{"a secrets key that is not 32 bytes", "minimal.yaml", "secretsKey: {existingSecret: {name: ''}, value: c2hvcnQ=}",
			[]string{"secretsKey.value must be 32 random bytes in base64"}},
		{"a short admin key", "minimal.yaml", "adminKey: {value: short}",
			[]string{"adminKey.value must be at least 32 characters"}},
		{"client certificate without its key", "strimzi-mtls.yaml", "kafka: {tls: {key: {existingSecret: {name: ''}}}}",
			[]string{"kafka.tls.cert and kafka.tls.key go together"}},
		{"a CA without TLS", "minimal.yaml", "kafka: {tls: {ca: {existingSecret: {name: ca}}}}",
			[]string{"kafka.tls.ca is set but kafka.tls.enabled is false"}},
		{"SCRAM without a password", "minimal.yaml", "kafka: {sasl: {mechanism: SCRAM-SHA-512, username: sluice}}",
			[]string{"kafka.sasl.password is required with SASL SCRAM-SHA-512"}},
		{"MSK IAM without TLS", "msk-iam.yaml", "kafka: {tls: {enabled: false}}",
			[]string{"AWS_MSK_IAM needs kafka.tls.enabled: true"}},
		{"OAUTHBEARER with two token sources", "oauthbearer.yaml", "kafka: {sasl: {oauth: {token: {existingSecret: {name: tok}}}}}",
			[]string{"exactly one token source"}},
		{"KEDA with OAUTHBEARER and no TriggerAuthentication", "oauthbearer.yaml", "sender: {autoscaling: {keda: {authenticationRef: {name: ''}}}}",
			[]string{"KEDA's kafka scaler cannot use a token file", "sender.autoscaling.keda.authenticationRef.name"}},
		{"min.insync.replicas above the replication factor", "minimal.yaml", "topics: {replicationFactor: 1}",
			[]string{"topics.minInsyncReplicas 2 is above topics.replicationFactor 1"}},
		{"both monitors", "minimal.yaml", "metrics: {podMonitor: {enabled: true}, serviceMonitor: {enabled: true}}",
			[]string{"metrics.podMonitor and metrics.serviceMonitor are both enabled"}},
		{"a ServiceAccount neither created nor named", "minimal.yaml", "serviceAccount: {create: false}",
			[]string{"serviceAccount.name is required when serviceAccount.create is false"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := renderChart(loadChart(t), withValues(t, tc.base, tc.values))
			if err == nil {
				t.Fatalf("values %s were accepted", tc.values)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestValueVariants renders values the ci files do not cover.
func TestValueVariants(t *testing.T) {
	t.Run("grace period derived from the shutdown timeout", func(t *testing.T) {
		r := render(t, withValues(t, "minimal.yaml", "shutdownTimeoutSeconds: 55"))
		for _, d := range all[*appsv1.Deployment](r) {
			if g := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != 65 {
				t.Errorf("%s: grace %d, want 55 + 10", d.Name, g)
			}
			if v, _ := env(&d.Spec.Template.Spec.Containers[0], "SLUICE_SHUTDOWN_TIMEOUT"); v != "55s" {
				t.Errorf("%s: SLUICE_SHUTDOWN_TIMEOUT %q", d.Name, v)
			}
		}
		checkSemantics(t, r)
	})
	t.Run("topics created by the operator", func(t *testing.T) {
		r := render(t, withValues(t, "hpa.yaml", "topics: {enabled: false}"))
		for _, m := range r.Manifests {
			if m.Hook != nil {
				t.Errorf("%s rendered although topics.enabled is false", m)
			}
		}
		if !strings.Contains(r.Notes, "topics Job is off") {
			t.Errorf("NOTES do not say the topics must be created:\n%s", r.Notes)
		}
		checkSemantics(t, r)
	})
	t.Run("a ServiceAccount the user manages", func(t *testing.T) {
		r := render(t, withValues(t, "msk-iam.yaml", "serviceAccount: {create: false, name: sluice-irsa}"))
		for _, w := range workloads(r) {
			if sa := w.Pod.Spec.ServiceAccountName; sa != "sluice-irsa" {
				t.Errorf("%s runs as %s, want sluice-irsa", w.Owner, sa)
			}
		}
		if len(all[*corev1.ServiceAccount](r)) != 0 {
			t.Error("a ServiceAccount is rendered although serviceAccount.create is false")
		}
		checkSemantics(t, r)
	})
	t.Run("config values of every YAML type", func(t *testing.T) {
		r := render(t, withValues(t, "minimal.yaml",
			"sender: {config: {SLUICE_MEMORY_BUDGET_BYTES: 268435456, SLUICE_REQUEST_TIMEOUT: 30s, SLUICE_GROUP: senders}}\n"+
				"ingest: {config: {SLUICE_REQUIRE_HTTPS: true}}"))
		c := &deployment(t, r, fullname+"-sender").Spec.Template.Spec.Containers[0]
		for name, want := range map[string]string{"SLUICE_MEMORY_BUDGET_BYTES": "268435456", "SLUICE_REQUEST_TIMEOUT": "30s", "SLUICE_GROUP": "senders"} {
			if got, _ := env(c, name); got != want {
				t.Errorf("%s=%q, want %q", name, got, want)
			}
		}
		if got, _ := env(&deployment(t, r, fullname+"-ingest").Spec.Template.Spec.Containers[0], "SLUICE_REQUIRE_HTTPS"); got != "true" {
			t.Errorf("SLUICE_REQUIRE_HTTPS=%q", got)
		}
	})
	t.Run("KEDA follows a renamed consumer group and topic prefix", func(t *testing.T) {
		r := render(t, withValues(t, "production.yaml", "sender: {config: {SLUICE_GROUP: senders}}\nkafka: {topicPrefix: prod.sluice.}"))
		checkSemantics(t, r)
	})
	t.Run("image mirror and tag", func(t *testing.T) {
		r := render(t, withValues(t, "minimal.yaml", "image: {repository: registry.example.com/mirror/, tag: 0.2.0-rc.1}"))
		if img := deployment(t, r, fullname+"-sender").Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/mirror/sluice-sender:0.2.0-rc.1" {
			t.Errorf("image %s", img)
		}
	})
}
