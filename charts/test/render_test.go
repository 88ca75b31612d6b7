package charttest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
)

// chartDir is the chart under test, relative to this module.
const chartDir = "../sluice"

// The release every render uses.
const (
	releaseName = "sluice"
	namespace   = "sluice"
	// kubeVersion is the oldest the chart supports (Chart.yaml kubeVersion).
	kubeVersion = "v1.27.0"
)

// apiVersions are the API groups of the CRDs the chart may render,
// announced as `helm template --api-versions` would.
var apiVersions = common.VersionSet{
	"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor",
	"monitoring.coreos.com/v1/PodMonitor", "monitoring.coreos.com/v1/PrometheusRule",
	"keda.sh/v1alpha1", "keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication",
}

// scheme knows every kind the chart may render: the built-in kinds, the
// prometheus-operator's and KEDA's. A manifest of any other kind fails.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientscheme.AddToScheme, monitoringv1.AddToScheme, kedav1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML into the registered Go types and refuses unknown and
// duplicate fields.
var strict = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// manifest is one rendered object.
type manifest struct {
	// Source is the template that rendered it.
	Source string
	// Hook is its hook record, nil for the release's ordinary resources.
	Hook *release.Hook
	GVK  schema.GroupVersionKind
	Obj  runtime.Object
	// Name is metadata.name.
	Name string
}

func (m manifest) String() string { return fmt.Sprintf("%s %s (%s)", m.GVK.Kind, m.Name, m.Source) }

// result is one render of the chart.
type result struct {
	// Values are the chart's defaults coalesced with the values given.
	Values common.Values
	// User are the values given (the ci file and overrides).
	User      map[string]any
	Manifests []manifest
	Notes     string
}

// loadChart loads charts/sluice from disk, as `helm template <path>` does.
func loadChart(t testing.TB) *chartv2.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

// ciFiles lists the chart-testing values files.
func ciFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 7 {
		t.Fatalf("want the 7 values files of charts/sluice/ci (minimal, production, hpa, msk-iam, strimzi-mtls, clickhouse-cloud, oauthbearer), found %v", files)
	}
	sort.Strings(files)
	return files
}

// readValues reads a values file.
func readValues(t testing.TB, path string) map[string]any {
	t.Helper()
	v, err := common.ReadValuesFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return v.AsMap()
}

// renderChart renders ch with vals as `helm template` does (client only,
// schema validated, hooks split out) and returns the error Helm gives.
func renderChart(ch *chartv2.Chart, vals map[string]any) (*release.Release, error) {
	inst := action.NewInstall(action.NewConfiguration())
	inst.DryRunStrategy = action.DryRunClient
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	inst.KubeVersion = kv
	inst.APIVersions = apiVersions
	r, err := inst.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	rel, ok := r.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("install returned a %T, not a v1 release", r)
	}
	return rel, nil
}

// render renders the chart with vals and decodes every manifest strictly.
func render(t testing.TB, vals map[string]any) result {
	t.Helper()
	return renderWith(t, loadChart(t), vals)
}

func renderWith(t testing.TB, ch *chartv2.Chart, vals map[string]any) result {
	t.Helper()
	rel, err := renderChart(ch, vals)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	coalesced, err := chartutil.CoalesceValues(ch, vals)
	if err != nil {
		t.Fatalf("coalescing values: %v", err)
	}
	res := result{Values: coalesced, User: vals, Notes: rel.Info.Notes}
	docs := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	for _, k := range keys {
		res.Manifests = append(res.Manifests, decode(t, docs[k], nil)...)
	}
	for _, h := range rel.Hooks {
		res.Manifests = append(res.Manifests, decode(t, h.Manifest, h)...)
	}
	return res
}

// decode decodes one rendered document strictly: an unknown field, a
// duplicate field or a kind none of the schemes knows fails the test.
func decode(t testing.TB, doc string, hook *release.Hook) []manifest {
	t.Helper()
	source := "?"
	if hook != nil {
		source = hook.Path
	}
	for _, line := range strings.Split(doc, "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			source = s
			break
		}
	}
	if strings.TrimSpace(stripComments(doc)) == "" {
		return nil
	}
	obj, gvk, err := strict.Decode([]byte(doc), nil, nil)
	if err != nil {
		t.Fatalf("decoding %s strictly: %v\n%s", source, err, doc)
	}
	acc, ok := obj.(interface{ GetName() string })
	if !ok {
		t.Fatalf("%s: %s has no metadata", source, gvk)
	}
	if acc.GetName() == "" {
		t.Fatalf("%s: %s has no name", source, gvk)
	}
	return []manifest{{Source: source, Hook: hook, GVK: *gvk, Obj: obj, Name: acc.GetName()}}
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// all returns the manifests of type T.
func all[T runtime.Object](r result) []T {
	var out []T
	for _, m := range r.Manifests {
		if o, ok := m.Obj.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

// find returns the manifest of kind and name, or nil.
func (r result) find(kind, name string) *manifest {
	for i, m := range r.Manifests {
		if m.GVK.Kind == kind && m.Name == name {
			return &r.Manifests[i]
		}
	}
	return nil
}

// value reads a coalesced value by its dotted path.
func (r result) value(t testing.TB, path string) any {
	t.Helper()
	v, err := r.Values.PathValue(path)
	if err != nil {
		t.Fatalf("value %s: %v", path, err)
	}
	return v
}

// intValue reads a coalesced numeric value.
func (r result) intValue(t testing.TB, path string) int {
	t.Helper()
	switch v := r.value(t, path).(type) {
	case float64:
		return int(v)
	case int:
		return v
	case int64:
		return int(v)
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("value %s: %v", path, err)
		}
		return n
	default:
		t.Fatalf("value %s is a %T", path, v)
		return 0
	}
}

// fullname is the name prefix of every resource of the test release.
const fullname = releaseName

// mustRead reads a file of the chart.
func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
