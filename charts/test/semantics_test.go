package charttest

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	release "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestSemantics checks what the manifests of every ci values file mean, not
// only that they decode.
func TestSemantics(t *testing.T) {
	for _, file := range ciFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			checkSemantics(t, render(t, readValues(t, file)))
		})
	}
}

func checkSemantics(t *testing.T, r result) {
	t.Helper()
	for _, check := range []struct {
		name string
		fn   func(testing.TB, result)
	}{
		{"selectors match pod labels", checkSelectors},
		{"probe ports are container ports", checkProbePorts},
		{"secret keys are provided", checkSecretKeys},
		{"grace period above the shutdown budget", checkGracePeriods},
		{"one autoscaler within the partitions", checkAutoscaling},
		{"restricted security contexts", checkSecurity},
		{"file settings point at mounted files", checkFileEnvs},
		{"topics Job is a hook with the Kafka settings", checkTopicsHook},
		{"images", checkImages},
		{"sender NetworkPolicy", checkNetworkPolicy},
	} {
		t.Run(check.name, func(t *testing.T) { check.fn(t, r) })
	}
}

// workload is a pod template and what owns it.
type workload struct {
	Owner manifest
	Pod   *corev1.PodTemplateSpec
}

func workloads(r result) []workload {
	var out []workload
	for _, m := range r.Manifests {
		switch o := m.Obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{m, &o.Spec.Template})
		case *batchv1.Job:
			out = append(out, workload{m, &o.Spec.Template})
		}
	}
	return out
}

// matchingDeployments lists the Deployments whose pods sel selects.
func matchingDeployments(t testing.TB, r result, sel labels.Selector) []string {
	t.Helper()
	var names []string
	for _, d := range all[*appsv1.Deployment](r) {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			names = append(names, d.Name)
		}
	}
	return names
}

func selector(t testing.TB, what string, ls *metav1.LabelSelector) labels.Selector {
	t.Helper()
	if ls == nil || (len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0) {
		t.Fatalf("%s: empty selector selects everything", what)
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return sel
}

func deployment(t testing.TB, r result, name string) *appsv1.Deployment {
	t.Helper()
	m := r.find("Deployment", name)
	if m == nil {
		t.Fatalf("no Deployment %s", name)
	}
	return m.Obj.(*appsv1.Deployment)
}

func hasContainerPort(pod *corev1.PodSpec, port intstr.IntOrString) bool {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return true
			}
		}
	}
	return false
}

func checkSelectors(t testing.TB, r result) {
	for _, d := range all[*appsv1.Deployment](r) {
		sel := selector(t, "Deployment "+d.Name, d.Spec.Selector)
		if got := matchingDeployments(t, r, sel); !slices.Equal(got, []string{d.Name}) {
			t.Errorf("Deployment %s: its selector matches the pods of %v", d.Name, got)
		}
		for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
			if got := matchingDeployments(t, r, selector(t, "topology spread of "+d.Name, c.LabelSelector)); !slices.Equal(got, []string{d.Name}) {
				t.Errorf("Deployment %s: topology spread over %s counts the pods of %v", d.Name, c.TopologyKey, got)
			}
		}
	}
	services := map[string]*corev1.Service{}
	for _, s := range all[*corev1.Service](r) {
		services[s.Name] = s
		got := matchingDeployments(t, r, labels.SelectorFromSet(s.Spec.Selector))
		if len(s.Spec.Selector) == 0 || len(got) != 1 {
			t.Errorf("Service %s: selector %v matches the pods of %v, want one Deployment", s.Name, s.Spec.Selector, got)
			continue
		}
		pod := &deployment(t, r, got[0]).Spec.Template.Spec
		for _, p := range s.Spec.Ports {
			if !hasContainerPort(pod, p.TargetPort) {
				t.Errorf("Service %s: target port %s is no container port of %s", s.Name, p.TargetPort.String(), got[0])
			}
		}
	}
	for _, p := range all[*policyv1.PodDisruptionBudget](r) {
		if got := matchingDeployments(t, r, selector(t, "PDB "+p.Name, p.Spec.Selector)); len(got) != 1 || got[0] != p.Name {
			t.Errorf("PodDisruptionBudget %s matches the pods of %v", p.Name, got)
		}
	}
	for _, np := range all[*networkingv1.NetworkPolicy](r) {
		if got := matchingDeployments(t, r, selector(t, "NetworkPolicy "+np.Name, &np.Spec.PodSelector)); !slices.Equal(got, []string{fullname + "-sender"}) {
			t.Errorf("NetworkPolicy %s applies to the pods of %v, want the sender's alone", np.Name, got)
		}
	}
	components := []string{fullname + "-ingest", fullname + "-logwriter", fullname + "-sender"}
	for _, pm := range all[*monitoringv1.PodMonitor](r) {
		got := matchingDeployments(t, r, selector(t, "PodMonitor "+pm.Name, &pm.Spec.Selector))
		slices.Sort(got)
		if !slices.Equal(got, components) {
			t.Errorf("PodMonitor %s scrapes the pods of %v, want %v", pm.Name, got, components)
		}
		for _, e := range pm.Spec.PodMetricsEndpoints {
			for _, name := range got {
				if e.Port == nil || !hasContainerPort(&deployment(t, r, name).Spec.Template.Spec, intstr.FromString(*e.Port)) {
					t.Errorf("PodMonitor %s: port %v is no container port of %s", pm.Name, e.Port, name)
				}
			}
		}
	}
	for _, sm := range all[*monitoringv1.ServiceMonitor](r) {
		sel := selector(t, "ServiceMonitor "+sm.Name, &sm.Spec.Selector)
		var scraped []string
		for _, s := range all[*corev1.Service](r) {
			if !sel.Matches(labels.Set(s.Labels)) {
				continue
			}
			for _, e := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, s.Name, e.Port)
				}
			}
			scraped = append(scraped, matchingDeployments(t, r, labels.SelectorFromSet(s.Spec.Selector))...)
		}
		slices.Sort(scraped)
		if !slices.Equal(scraped, components) {
			t.Errorf("ServiceMonitor %s scrapes the pods of %v, want each of %v once", sm.Name, scraped, components)
		}
	}
	for _, ing := range all[*networkingv1.Ingress](r) {
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				s := services[p.Backend.Service.Name]
				if s == nil {
					t.Errorf("Ingress %s: no Service %s", ing.Name, p.Backend.Service.Name)
					continue
				}
				if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == p.Backend.Service.Port.Name }) {
					t.Errorf("Ingress %s: Service %s has no port %q", ing.Name, s.Name, p.Backend.Service.Port.Name)
				}
			}
		}
	}
	for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](r) {
		if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || r.find("Deployment", ref.Name) == nil {
			t.Errorf("HPA %s scales %s %s, which is not rendered", h.Name, ref.Kind, ref.Name)
		}
	}
	for _, so := range all[*kedav1alpha1.ScaledObject](r) {
		if ref := so.Spec.ScaleTargetRef; ref.Kind != "Deployment" || r.find("Deployment", ref.Name) == nil {
			t.Errorf("ScaledObject %s scales %s %s, which is not rendered", so.Name, ref.Kind, ref.Name)
		}
	}
}

func checkProbePorts(t testing.TB, r result) {
	for _, d := range all[*appsv1.Deployment](r) {
		for _, c := range d.Spec.Template.Spec.Containers {
			probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
			for kind, p := range probes {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s/%s: no HTTP %s probe", d.Name, c.Name, kind)
					continue
				}
				if !hasContainerPort(&d.Spec.Template.Spec, p.HTTPGet.Port) {
					t.Errorf("%s/%s: %s probe port %s is no container port", d.Name, c.Name, kind, p.HTTPGet.Port.String())
				}
			}
			if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: liveness probes %s, want /healthz", d.Name, c.LivenessProbe.HTTPGet.Path)
			}
			if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: readiness probes %s, want /readyz", d.Name, c.ReadinessProbe.HTTPGet.Path)
			}
		}
	}
}

// secretRef is one use of a Secret's key.
type secretRef struct{ name, key, by string }

// existingSecrets are the (name, key) pairs values names as existing
// Secrets: every map with existingSecret {name, key}.
func existingSecrets(v any) map[[2]string]bool {
	out := map[[2]string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ex, ok := x["existingSecret"].(map[string]any); ok {
				name, _ := ex["name"].(string)
				key, _ := ex["key"].(string)
				if name != "" {
					out[[2]string{name, key}] = true
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}

func podSecretRefs(owner string, pod *corev1.PodSpec) []secretRef {
	var refs []secretRef
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				refs = append(refs, secretRef{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, owner + " env " + e.Name})
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				refs = append(refs, secretRef{ef.SecretRef.Name, "", owner + " envFrom"})
			}
		}
	}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			for _, it := range v.Secret.Items {
				refs = append(refs, secretRef{v.Secret.SecretName, it.Key, owner + " volume " + v.Name})
			}
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					for _, it := range s.Secret.Items {
						refs = append(refs, secretRef{s.Secret.Name, it.Key, owner + " volume " + v.Name})
					}
				}
			}
		}
	}
	return refs
}

func checkSecretKeys(t testing.TB, r result) {
	existing := existingSecrets(r.User)
	created := map[string]manifest{}
	for _, m := range r.Manifests {
		if s, ok := m.Obj.(*corev1.Secret); ok {
			created[s.Name] = m
		}
	}
	check := func(ref secretRef, user *manifest) {
		if m, ok := created[ref.name]; ok {
			s := m.Obj.(*corev1.Secret)
			if _, ok := s.Data[ref.key]; !ok && ref.key != "" {
				t.Errorf("%s: the chart's Secret %s has no key %q", ref.by, ref.name, ref.key)
			}
			// A pre-install hook runs before the release's ordinary
			// resources exist: it may read only hook Secrets made before it.
			if user != nil && user.Hook != nil {
				if m.Hook == nil {
					t.Errorf("%s: reads Secret %s, which a pre-install hook runs before", ref.by, ref.name)
				} else if !hookRunsBefore(m.Hook, user.Hook) {
					t.Errorf("%s: hook Secret %s is not created before the hook that reads it", ref.by, ref.name)
				}
			}
			if user != nil && user.Hook == nil && m.Hook != nil {
				t.Errorf("%s: reads hook Secret %s, deleted once the hooks succeeded", ref.by, ref.name)
			}
			return
		}
		if !existing[[2]string{ref.name, ref.key}] {
			t.Errorf("%s: Secret %s key %q is neither created by the chart nor named as an existing Secret in values", ref.by, ref.name, ref.key)
		}
	}
	for _, w := range workloads(r) {
		for _, ref := range podSecretRefs(w.Owner.String(), &w.Pod.Spec) {
			check(ref, &w.Owner)
		}
	}
	for _, m := range r.Manifests {
		if ta, ok := m.Obj.(*kedav1alpha1.TriggerAuthentication); ok {
			for _, s := range ta.Spec.SecretTargetRef {
				check(secretRef{s.Name, s.Key, m.String() + " parameter " + s.Parameter}, &m)
			}
		}
	}
}

// hookRunsBefore tells whether hook a is created before hook b in every
// phase b runs in.
func hookRunsBefore(a, b *release.Hook) bool {
	for _, e := range b.Events {
		if !slices.Contains(a.Events, e) {
			return false
		}
	}
	return a.Weight < b.Weight
}

func env(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func checkGracePeriods(t testing.TB, r result) {
	for _, d := range all[*appsv1.Deployment](r) {
		c := &d.Spec.Template.Spec.Containers[0]
		v, ok := env(c, "SLUICE_SHUTDOWN_TIMEOUT")
		if !ok {
			t.Errorf("%s: SLUICE_SHUTDOWN_TIMEOUT not set", d.Name)
			continue
		}
		timeout, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: SLUICE_SHUTDOWN_TIMEOUT %q: %v", d.Name, v, err)
		}
		g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
		// A process exits at most 5 s after the shutdown timeout
		// (service.ShutdownMargin); Kubernetes kills it at the grace period.
		if g == nil || time.Duration(*g)*time.Second <= timeout+5*time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %v is not above the shutdown timeout %v + 5s", d.Name, g, timeout)
		}
	}
}

func checkAutoscaling(t testing.TB, r result) {
	scalers := map[string][]string{}
	maxReplicas := map[string]int32{}
	for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](r) {
		scalers[h.Spec.ScaleTargetRef.Name] = append(scalers[h.Spec.ScaleTargetRef.Name], "HPA "+h.Name)
		maxReplicas[h.Spec.ScaleTargetRef.Name] = h.Spec.MaxReplicas
	}
	for _, so := range all[*kedav1alpha1.ScaledObject](r) {
		target := so.Spec.ScaleTargetRef.Name
		scalers[target] = append(scalers[target], "ScaledObject "+so.Name)
		if so.Spec.MaxReplicaCount == nil {
			t.Errorf("ScaledObject %s has no maxReplicaCount", so.Name)
		} else {
			maxReplicas[target] = *so.Spec.MaxReplicaCount
		}
		checkKafkaTrigger(t, r, so)
	}
	ceilings := map[string]int{
		fullname + "-sender":    r.intValue(t, "topics.partitions.deliveries"),
		fullname + "-logwriter": r.intValue(t, "topics.partitions.attempts") + r.intValue(t, "topics.partitions.eventlog"),
	}
	for _, d := range all[*appsv1.Deployment](r) {
		s := scalers[d.Name]
		if len(s) > 1 {
			t.Errorf("Deployment %s is scaled by %v at once", d.Name, s)
		}
		if len(s) == 1 && d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas although %s scales it: every upgrade would reset the scale", d.Name, s[0])
		}
		ceiling, ok := ceilings[d.Name]
		if !ok {
			continue
		}
		n := maxReplicas[d.Name]
		if len(s) == 0 && d.Spec.Replicas != nil {
			n = *d.Spec.Replicas
		}
		if int(n) > ceiling {
			t.Errorf("Deployment %s may run %d replicas, above the %d partitions its group shares", d.Name, n, ceiling)
		}
	}
}

// checkKafkaTrigger checks a ScaledObject's kafka trigger against the
// Deployment it scales: the same brokers, its consumer group, the topics.
func checkKafkaTrigger(t testing.TB, r result, so *kedav1alpha1.ScaledObject) {
	d := deployment(t, r, so.Spec.ScaleTargetRef.Name)
	c := &d.Spec.Template.Spec.Containers[0]
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
		t.Fatalf("ScaledObject %s: want one kafka trigger, got %+v", so.Name, so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	brokers, _ := env(c, "SLUICE_KAFKA_BROKERS")
	if md["bootstrapServers"] != brokers {
		t.Errorf("ScaledObject %s watches brokers %q, the Deployment uses %q", so.Name, md["bootstrapServers"], brokers)
	}
	group, ok := env(c, "SLUICE_GROUP")
	if !ok {
		group = "sluice-" + c.Name
	}
	if md["consumerGroup"] != group {
		t.Errorf("ScaledObject %s watches group %q, the Deployment's is %q", so.Name, md["consumerGroup"], group)
	}
	prefix, _ := env(c, "SLUICE_TOPIC_PREFIX")
	if c.Name == "sender" && md["topic"] != prefix+"deliveries" {
		t.Errorf("ScaledObject %s watches topic %q, want %q: the retry tiers' lag is not work to do yet", so.Name, md["topic"], prefix+"deliveries")
	}
	if tls, _ := env(c, "SLUICE_KAFKA_TLS"); (tls == "true") != (md["tls"] == "enable") {
		t.Errorf("ScaledObject %s: tls %q, the Deployment's SLUICE_KAFKA_TLS %q", so.Name, md["tls"], tls)
	}
	if mech, _ := env(c, "SLUICE_KAFKA_SASL_MECHANISM"); mech != "" && so.Spec.Triggers[0].AuthenticationRef == nil {
		t.Errorf("ScaledObject %s: SASL %s but no authenticationRef", so.Name, mech)
	}
	if ref := so.Spec.Triggers[0].AuthenticationRef; ref != nil && (ref.Kind == "" || ref.Kind == "TriggerAuthentication") && r.find("TriggerAuthentication", ref.Name) == nil {
		if v, _ := r.Values.PathValue(c.Name + ".autoscaling.keda.authenticationRef.name"); v != ref.Name {
			t.Errorf("ScaledObject %s: TriggerAuthentication %s is neither rendered nor named in values", so.Name, ref.Name)
		}
	}
}

func checkSecurity(t testing.TB, r result) {
	automount := r.value(t, "serviceAccount.automountToken") == true
	for _, w := range workloads(r) {
		p := &w.Pod.Spec
		ps := p.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod security context %+v is not restricted (runAsNonRoot, seccomp RuntimeDefault)", w.Owner, ps)
		}
		if !automount && (p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken) {
			t.Errorf("%s: mounts the Kubernetes API token, which Sluice never uses", w.Owner)
		}
		if p.HostNetwork || p.HostPID || p.HostIPC {
			t.Errorf("%s: uses the host's namespaces", w.Owner)
		}
		for _, c := range p.Containers {
			s := c.SecurityContext
			switch {
			case s == nil:
				t.Errorf("%s/%s: no security context", w.Owner, c.Name)
			case s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: allows privilege escalation", w.Owner, c.Name)
			case s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: writable root filesystem", w.Owner, c.Name)
			case s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(s.Capabilities.Add) > 0:
				t.Errorf("%s/%s: capabilities %+v, want drop ALL", w.Owner, c.Name, s.Capabilities)
			case s.Privileged != nil && *s.Privileged:
				t.Errorf("%s/%s: privileged", w.Owner, c.Name)
			case s.RunAsUser == nil || *s.RunAsUser != 65532:
				t.Errorf("%s/%s: runs as %v, want the images' user 65532", w.Owner, c.Name, s.RunAsUser)
			}
		}
	}
}

// volumeFiles lists the files a volume provides, by path inside it.
func volumeFiles(v corev1.Volume) []string {
	var files []string
	if v.Secret != nil {
		for _, it := range v.Secret.Items {
			files = append(files, it.Path)
		}
	}
	if v.Projected != nil {
		for _, s := range v.Projected.Sources {
			if s.Secret != nil {
				for _, it := range s.Secret.Items {
					files = append(files, it.Path)
				}
			}
			if s.ServiceAccountToken != nil {
				files = append(files, s.ServiceAccountToken.Path)
			}
		}
	}
	return files
}

func checkFileEnvs(t testing.TB, r result) {
	for _, w := range workloads(r) {
		volumes := map[string]corev1.Volume{}
		for _, v := range w.Pod.Spec.Volumes {
			volumes[v.Name] = v
		}
		for _, c := range w.Pod.Spec.Containers {
			for _, e := range c.Env {
				if !strings.HasSuffix(e.Name, "_FILE") {
					continue
				}
				dir, file := path.Split(e.Value)
				found := false
				for _, m := range c.VolumeMounts {
					if strings.TrimSuffix(dir, "/") == m.MountPath {
						if !m.ReadOnly {
							t.Errorf("%s: %s is mounted writable", w.Owner, m.MountPath)
						}
						found = slices.Contains(volumeFiles(volumes[m.Name]), file)
					}
				}
				if !found {
					t.Errorf("%s/%s: %s=%s is no file of a mounted volume", w.Owner, c.Name, e.Name, e.Value)
				}
			}
		}
	}
}

func checkTopicsHook(t testing.TB, r result) {
	job := r.find("Job", fullname+"-topics")
	if r.value(t, "topics.enabled") != true {
		if job != nil {
			t.Errorf("topics.enabled is false but the Job is rendered")
		}
		return
	}
	if job == nil {
		t.Fatal("no topics Job")
	}
	if job.Hook == nil || !slices.Contains(job.Hook.Events, release.HookPreInstall) || !slices.Contains(job.Hook.Events, release.HookPreUpgrade) {
		t.Fatalf("the topics Job is not a pre-install and pre-upgrade hook: %+v", job.Hook)
	}
	for _, p := range []release.HookDeletePolicy{release.HookBeforeHookCreation, release.HookSucceeded} {
		if !slices.Contains(job.Hook.DeletePolicies, p) {
			t.Errorf("topics Job: delete policies %v lack %s", job.Hook.DeletePolicies, p)
		}
	}
	j := job.Obj.(*batchv1.Job)
	if j.Spec.BackoffLimit == nil || j.Spec.ActiveDeadlineSeconds == nil {
		t.Errorf("topics Job: backoffLimit %v, activeDeadlineSeconds %v: both must bound it", j.Spec.BackoffLimit, j.Spec.ActiveDeadlineSeconds)
	}
	// Its ServiceAccount exists before it runs: a hook made before it, or
	// one the user manages.
	sa := j.Spec.Template.Spec.ServiceAccountName
	if r.value(t, "serviceAccount.create") == true {
		m := r.find("ServiceAccount", sa)
		if m == nil || m.Hook == nil || !hookRunsBefore(m.Hook, job.Hook) {
			t.Errorf("topics Job runs as %s, which is not a hook created before it", sa)
		}
	}
	jc := &j.Spec.Template.Spec.Containers[0]
	sc := &deployment(t, r, fullname+"-sender").Spec.Template.Spec.Containers[0]
	// The same connection as the services: every Kafka setting the sender
	// has, with the same value (files at the same paths).
	for _, e := range sc.Env {
		if !strings.HasPrefix(e.Name, "SLUICE_KAFKA_") && e.Name != "SLUICE_TOPIC_PREFIX" && e.Name != "AWS_REGION" {
			continue
		}
		if e.Name == "SLUICE_KAFKA_CLIENT_ID" {
			continue
		}
		if v, ok := env(jc, e.Name); !ok || v != e.Value {
			t.Errorf("topics Job: %s=%q, the sender has %q", e.Name, v, e.Value)
		}
	}
	want := map[string]string{
		"SLUICE_REPLICATION_FACTOR":  fmt.Sprint(r.intValue(t, "topics.replicationFactor")),
		"SLUICE_MIN_INSYNC_REPLICAS": fmt.Sprint(r.intValue(t, "topics.minInsyncReplicas")),
	}
	for _, p := range []string{"events", "deliveries", "retry", "dead", "attempts", "eventlog"} {
		want["SLUICE_PARTITIONS_"+strings.ToUpper(p)] = fmt.Sprint(r.intValue(t, "topics.partitions."+p))
	}
	for name, v := range want {
		if got, _ := env(jc, name); got != v {
			t.Errorf("topics Job: %s=%q, want %q", name, got, v)
		}
	}
	if w, ok := env(jc, "SLUICE_KAFKA_WAIT"); !ok {
		t.Errorf("topics Job: SLUICE_KAFKA_WAIT not set")
	} else if d, err := time.ParseDuration(w); err != nil || d >= time.Duration(*j.Spec.ActiveDeadlineSeconds)*time.Second {
		t.Errorf("topics Job: SLUICE_KAFKA_WAIT %q is not below activeDeadlineSeconds %d", w, *j.Spec.ActiveDeadlineSeconds)
	}
}

func checkImages(t testing.TB, r result) {
	repo := r.value(t, "image.repository").(string)
	tag, _ := r.value(t, "image.tag").(string)
	if tag == "" {
		tag = "0.1.0"
	}
	for _, w := range workloads(r) {
		for _, c := range w.Pod.Spec.Containers {
			if want := fmt.Sprintf("%s/sluice-%s:%s", repo, c.Name, tag); c.Image != want {
				t.Errorf("%s: image %s, want %s", w.Owner, c.Image, want)
			}
		}
	}
}

func checkNetworkPolicy(t testing.TB, r result) {
	m := r.find("NetworkPolicy", fullname+"-sender")
	if r.value(t, "sender.networkPolicy.enabled") != true {
		if m != nil {
			t.Error("sender.networkPolicy.enabled is false but the NetworkPolicy is rendered")
		}
		return
	}
	if m == nil {
		t.Fatal("no sender NetworkPolicy")
	}
	np := m.Obj.(*networkingv1.NetworkPolicy)
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("policy types %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.String() != "ops" {
		t.Errorf("ingress %+v, want the ops port alone", np.Spec.Ingress)
	}
	// The internet, minus every cluster range: 0.0.0.0/0 and ::/0 with
	// each configured range in the except list of its family.
	except := map[string][]string{}
	for _, rule := range np.Spec.Egress {
		for _, peer := range rule.To {
			if peer.IPBlock != nil && (peer.IPBlock.CIDR == "0.0.0.0/0" || peer.IPBlock.CIDR == "::/0") {
				if len(rule.Ports) != 0 {
					t.Errorf("webhook egress limited to ports %v: endpoints listen on any port", rule.Ports)
				}
				except[peer.IPBlock.CIDR] = peer.IPBlock.Except
			}
		}
	}
	ranges := r.value(t, "sender.networkPolicy.clusterRanges").([]any)
	for _, cidr := range ranges {
		c := cidr.(string)
		family := "0.0.0.0/0"
		if strings.Contains(c, ":") {
			family = "::/0"
		}
		if !slices.Contains(except[family], c) {
			t.Errorf("egress to %s does not exclude the cluster range %s: %v", family, c, except)
		}
	}
	if len(except) != 2 {
		t.Errorf("egress reaches %v, want 0.0.0.0/0 and ::/0", except)
	}
	dns := false
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.IntValue() == 53 && len(rule.To) > 0 && rule.To[0].NamespaceSelector != nil {
				dns = true
			}
		}
	}
	if !dns {
		t.Error("no egress rule to the cluster DNS on port 53")
	}
}
