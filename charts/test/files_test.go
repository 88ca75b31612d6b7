package charttest

import (
	"bufio"
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	corev1 "k8s.io/api/core/v1"
)

// TestDashboardsOneConfigMapPerFile: every JSON file under dashboards/ is
// one ConfigMap with the Grafana sidecar's label, and none is rendered
// while dashboards are off. The chart's own dashboards (sluice-overview,
// sluice-endpoint, sluice-pipeline) are there with their content, and two
// added files show how names are made from file names.
func TestDashboardsOneConfigMapPerFile(t *testing.T) {
	ch := loadChart(t)
	want := map[string]string{
		fullname + "-dashboard-team-overview": "Team Overview.json",
		fullname + "-dashboard-delivery-log":  "delivery-log.json",
	}
	shipped := map[string]string{} // ConfigMap name → the file's JSON
	for _, f := range ch.Files {
		if dir, base := filepath.Split(f.Name); dir == "dashboards/" && strings.HasSuffix(base, ".json") {
			name := fullname + "-dashboard-" + strings.TrimSuffix(base, ".json")
			want[name] = base
			shipped[name] = string(f.Data)
		}
	}
	for _, name := range []string{"sluice-overview", "sluice-endpoint", "sluice-pipeline"} {
		if _, ok := shipped[fullname+"-dashboard-"+name]; !ok {
			t.Errorf("the chart does not ship dashboards/%s.json", name)
		}
	}
	ch.Files = append(ch.Files,
		&common.File{Name: "dashboards/Team Overview.json", Data: []byte(`{"title": "Team overview"}`)},
		&common.File{Name: "dashboards/Team Overview.json", Data: []byte(`{"title": "Team overview"}`)},
		&common.File{Name: "dashboards/delivery-log.json", Data: []byte(`{"title": "Delivery log"}`)},
		&common.File{Name: "dashboards/notes.md", Data: []byte(`not a dashboard`)})
	off := renderWith(t, ch, withValues(t, "minimal.yaml", ""))
	if n := len(all[*corev1.ConfigMap](off)); n != 0 {
		t.Fatalf("%d ConfigMaps rendered with dashboards off", n)
	}
	r := renderWith(t, ch, withValues(t, "minimal.yaml", "dashboards: {enabled: true, annotations: {grafana_folder: Sluice}}"))
	cms := all[*corev1.ConfigMap](r)
	if len(cms) != len(want) {
		t.Fatalf("rendered %d ConfigMaps, want %d", len(cms), len(want))
	}
	for _, cm := range cms {
		key, ok := want[cm.Name]
		if !ok {
			t.Errorf("unexpected ConfigMap %s", cm.Name)
			continue
		}
		if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Sluice" {
			t.Errorf("%s: labels %v annotations %v", cm.Name, cm.Labels, cm.Annotations)
		}
		if !strings.Contains(cm.Data[key], `"title"`) {
			t.Errorf("%s: data %v does not hold %s", cm.Name, cm.Data, key)
		}
		if json, ok := shipped[cm.Name]; ok && strings.TrimSpace(cm.Data[key]) != strings.TrimSpace(json) {
			t.Errorf("%s: data differs from dashboards/%s", cm.Name, key)
		}
	}
}

// TestValuesDocumented: every value in values.yaml has a comment above it,
// except the entries of example objects and lists (resources, labels,
// hosts…), which their parent's comment describes.
func TestValuesDocumented(t *testing.T) {
	key := regexp.MustCompile(`^( *)([A-Za-z_][A-Za-z0-9_.-]*):(.*)$`)
	sc := bufio.NewScanner(bytes.NewReader(mustRead(t, filepath.Join(chartDir, "values.yaml"))))
	prevComment := false
	// example is the indentation of a key whose children are examples,
	// or -1.
	example := -1
	checked := 0
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(trimmed, "#"):
			prevComment = true
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if example >= 0 && indent > example {
			prevComment = false
			continue
		}
		example = -1
		m := key.FindStringSubmatch(line)
		if m == nil {
			// A list item outside an example block.
			t.Errorf("values.yaml:%d: %q is a list entry outside an example", n, line)
			continue
		}
		value := strings.TrimSpace(m[3])
		if value != "" && !prevComment {
			t.Errorf("values.yaml:%d: %s has no comment", n, m[2])
		}
		checked++
		if value == "" && (prevComment || isExampleParent(m[2])) {
			// A commented mapping: entries below that are not keys of
			// the chart (lists, free-form objects) are its examples.
			if isExampleParent(m[2]) {
				example = indent
			}
		}
		prevComment = false
	}
	if checked < 150 {
		t.Fatalf("checked %d values; the scan is broken", checked)
	}
}

// isExampleParent names the values whose children are Kubernetes objects
// or free-form maps, not settings of the chart.
func isExampleParent(k string) bool {
	switch k {
	case "resources", "hosts", "clusterRanges", "kafkaPorts", "labels", "podLabels", "requests", "limits":
		return true
	}
	return false
}
