package charttest

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// recorder is a testing.TB that records failures instead of failing, so a
// check can be run on a manifest broken on purpose.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	// Ends the check's goroutine as t.Fatalf would.
	panic(errFatal)
}
func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

var errFatal = fmt.Errorf("fatal")

// runCheck runs check on r and returns what it reported.
func runCheck(t *testing.T, check func(testing.TB, result), r result) []string {
	rec := &recorder{TB: t}
	func() {
		defer func() {
			if p := recover(); p != nil && p != errFatal {
				panic(p)
			}
		}()
		check(rec, r)
	}()
	return rec.errs
}

// TestChecksCatchMistakes breaks one rendered manifest at a time and
// expects the check guarding it to say so: the semantic checks can fail.
func TestChecksCatchMistakes(t *testing.T) {
	sender, job := fullname+"-sender", fullname+"-topics"
	for _, tc := range []struct {
		desc    string
		file    string
		check   func(testing.TB, result)
		want    string
		breakIt func(t *testing.T, r *result)
	}{
		{"a Service selecting no pods", "minimal.yaml", checkSelectors, "matches the pods of []", func(t *testing.T, r *result) {
			r.find("Service", fullname+"-ingest").Obj.(*corev1.Service).Spec.Selector["app.kubernetes.io/component"] = "api"
		}},
		{"a PodDisruptionBudget over two components", "minimal.yaml", checkSelectors, "PodDisruptionBudget", func(t *testing.T, r *result) {
			sel := r.find("PodDisruptionBudget", sender).Obj.(*policyv1.PodDisruptionBudget).Spec.Selector
			delete(sel.MatchLabels, "app.kubernetes.io/component")
		}},
		{"a probe on a port the container lacks", "minimal.yaml", checkProbePorts, "no container port", func(t *testing.T, r *result) {
			c := &deployment(t, *r, sender).Spec.Template.Spec.Containers[0]
			c.ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics")
		}},
		{"a chart Secret without the key read", "hpa.yaml", checkSecretKeys, "has no key", func(t *testing.T, r *result) {
			delete(r.find("Secret", fullname).Obj.(*corev1.Secret).Data, "secrets-key")
		}},
		{"an unnamed existing Secret", "minimal.yaml", checkSecretKeys, "neither created by the chart nor named", func(t *testing.T, r *result) {
			c := &deployment(t, *r, sender).Spec.Template.Spec.Containers[0]
			for i := range c.Env {
				if c.Env[i].ValueFrom != nil {
					c.Env[i].ValueFrom.SecretKeyRef.Name = "elsewhere"
				}
			}
		}},
		{"the hook reading the release's Secret", "hpa.yaml", checkSecretKeys, "which a pre-install hook runs before", func(t *testing.T, r *result) {
			j := r.find("Job", job).Obj.(*batchv1.Job)
			for _, v := range j.Spec.Template.Spec.Volumes {
				for _, s := range v.Projected.Sources {
					s.Secret.Name = fullname
					s.Secret.Items[0].Key = "kafka-sasl-password"
				}
			}
		}},
		{"a grace period inside the shutdown budget", "minimal.yaml", checkGracePeriods, "is not above the shutdown timeout", func(t *testing.T, r *result) {
			g := int64(30)
			deployment(t, *r, sender).Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}},
		{"an HPA beside a ScaledObject", "production.yaml", checkAutoscaling, "is scaled by", func(t *testing.T, r *result) {
			h := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: sender},
				Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MaxReplicas: 4,
					ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", Name: sender}}}
			r.Manifests = append(r.Manifests, manifest{Source: "test", GVK: schema.GroupVersionKind{Kind: "HorizontalPodAutoscaler"}, Obj: h, Name: sender})
		}},
		{"more senders than partitions", "production.yaml", checkAutoscaling, "above the 24 partitions", func(t *testing.T, r *result) {
			n := int32(30)
			r.find("ScaledObject", sender).Obj.(*kedav1alpha1.ScaledObject).Spec.MaxReplicaCount = &n
		}},
		{"a trigger on another group", "production.yaml", checkAutoscaling, "watches group", func(t *testing.T, r *result) {
			r.find("ScaledObject", sender).Obj.(*kedav1alpha1.ScaledObject).Spec.Triggers[0].Metadata["consumerGroup"] = "sluice-router"
		}},
		{"privilege escalation", "minimal.yaml", checkSecurity, "allows privilege escalation", func(t *testing.T, r *result) {
			yes := true
			deployment(t, *r, sender).Spec.Template.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = &yes
		}},
		{"a file setting pointing nowhere", "strimzi-mtls.yaml", checkFileEnvs, "is no file of a mounted volume", func(t *testing.T, r *result) {
			c := &deployment(t, *r, sender).Spec.Template.Spec.Containers[0]
			for i := range c.Env {
				if c.Env[i].Name == "SLUICE_KAFKA_TLS_CA_FILE" {
					c.Env[i].Value = "/etc/sluice/kafka/cluster-ca.crt"
				}
			}
		}},
		{"a topics Job without the TLS setting", "production.yaml", checkTopicsHook, "SLUICE_KAFKA_TLS=", func(t *testing.T, r *result) {
			c := &r.find("Job", job).Obj.(*batchv1.Job).Spec.Template.Spec.Containers[0]
			c.Env = removeEnv(c.Env, "SLUICE_KAFKA_TLS")
		}},
		{"a topics Job that is no hook", "minimal.yaml", checkTopicsHook, "not a pre-install and pre-upgrade hook", func(t *testing.T, r *result) {
			r.find("Job", job).Hook = nil
		}},
		{"egress to the metadata address", "minimal.yaml", checkNetworkPolicy, "169.254.0.0/16", func(t *testing.T, r *result) {
			np := r.find("NetworkPolicy", sender).Obj.(*networkingv1.NetworkPolicy)
			for _, rule := range np.Spec.Egress {
				for _, p := range rule.To {
					if p.IPBlock != nil && p.IPBlock.CIDR == "0.0.0.0/0" {
						p.IPBlock.Except = removeString(p.IPBlock.Except, "169.254.0.0/16")
					}
				}
			}
		}},
		{"a wrong image", "minimal.yaml", checkImages, "image", func(t *testing.T, r *result) {
			deployment(t, *r, sender).Spec.Template.Spec.Containers[0].Image = "ghcr.io/sluicehq/sluice-ingest:0.1.0"
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := render(t, readValues(t, filepath.Join(chartDir, "ci", tc.file)))
			if errs := runCheck(t, tc.check, r); len(errs) > 0 {
				t.Fatalf("the check fails on the intact render: %v", errs)
			}
			tc.breakIt(t, &r)
			errs := runCheck(t, tc.check, r)
			if !strings.Contains(strings.Join(errs, "\n"), tc.want) {
				t.Fatalf("the check reported %q, want a report containing %q", errs, tc.want)
			}
		})
	}
}

func removeEnv(env []corev1.EnvVar, name string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, e := range env {
		if e.Name != name {
			out = append(out, e)
		}
	}
	return out
}

func removeString(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}
