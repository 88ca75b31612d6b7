package charttest

import (
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
)

// TestLintStrict runs `helm lint --strict` over every ci values file: any
// warning or error fails.
func TestLintStrict(t *testing.T) {
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range ciFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace = namespace
			l.KubeVersion = kv
			res := l.Run([]string{chartDir}, readValues(t, file))
			if res.TotalChartsLinted != 1 {
				t.Fatalf("linted %d charts, want 1: %v", res.TotalChartsLinted, res.Errors)
			}
			var problems []string
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					problems = append(problems, m.Error())
				}
			}
			for _, err := range res.Errors {
				problems = append(problems, err.Error())
			}
			if len(problems) > 0 {
				t.Fatalf("helm lint --strict:\n%s", strings.Join(problems, "\n"))
			}
		})
	}
}

// TestRenderCIFiles renders every ci values file and decodes each manifest
// strictly (render does); it also pins what each file is there to show.
func TestRenderCIFiles(t *testing.T) {
	want := map[string][]string{
		"minimal.yaml": {"Deployment/sluice-ingest", "Deployment/sluice-sender", "Deployment/sluice-logwriter",
			"Service/sluice-ingest", "ServiceAccount/sluice", "NetworkPolicy/sluice-sender", "Job/sluice-topics",
			"ServiceAccount/sluice-topics", "PodDisruptionBudget/sluice-sender"},
		"production.yaml": {"ScaledObject/sluice-sender", "ScaledObject/sluice-logwriter", "TriggerAuthentication/sluice-kafka",
			"Ingress/sluice-ingest", "ServiceMonitor/sluice", "Service/sluice-sender-metrics", "PrometheusRule/sluice"},
		"hpa.yaml": {"HorizontalPodAutoscaler/sluice-ingest", "HorizontalPodAutoscaler/sluice-sender",
			"HorizontalPodAutoscaler/sluice-logwriter", "Secret/sluice", "Secret/sluice-topics", "PodMonitor/sluice"},
		"msk-iam.yaml":          {"ScaledObject/sluice-sender", "TriggerAuthentication/sluice-kafka"},
		"strimzi-mtls.yaml":     {"Deployment/sluice-sender"},
		"clickhouse-cloud.yaml": {"Deployment/sluice-logwriter"},
		"oauthbearer.yaml":      {"ScaledObject/sluice-sender"},
	}
	for _, file := range ciFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r := render(t, readValues(t, file))
			if len(r.Manifests) == 0 {
				t.Fatal("rendered nothing")
			}
			for _, kn := range want[filepath.Base(file)] {
				kind, name, _ := strings.Cut(kn, "/")
				if r.find(kind, name) == nil {
					t.Errorf("no %s rendered", kn)
				}
			}
			for _, m := range r.Manifests {
				t.Logf("%s", m)
			}
		})
	}
}
