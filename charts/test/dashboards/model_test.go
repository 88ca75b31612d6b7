package dashboardtest

import (
	"strings"
	"testing"
)

// TestDashboardModel checks what Grafana needs to import the files
// anywhere: a current schema, unique uids, and datasources that are
// dashboard variables of the right plugin type, never a fixed uid (which
// would tie the file to one Grafana).
func TestDashboardModel(t *testing.T) {
	ds, err := loadDashboards()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) < 3 {
		t.Fatalf("%d dashboards in %s, want the overview, endpoint and pipeline ones", len(ds), dashboardDir)
	}
	uids := map[string]string{}
	for _, d := range ds {
		if d.SchemaVersion < 39 {
			t.Errorf("%s: schemaVersion %d, want 39 or later", d.file, d.SchemaVersion)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q: both are needed", d.file, d.UID, d.Title)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share the uid %s", d.file, other, d.UID)
		}
		uids[d.UID] = d.file
		dsVars := map[string]string{} // variable name → plugin type
		for _, v := range d.Templating.List {
			if v.Type == "datasource" {
				var plugin string
				if err := jsonString(v.Query, &plugin); err != nil {
					t.Errorf("%s: datasource variable %s: query is not a plugin type: %v", d.file, v.Name, err)
				}
				dsVars[v.Name] = plugin
			}
		}
		check := func(where string, ref *datasourceRef) {
			if ref == nil {
				t.Errorf("%s: %s has no datasource", d.file, where)
				return
			}
			name := strings.TrimSuffix(strings.TrimPrefix(ref.UID, "${"), "}")
			plugin, ok := dsVars[name]
			switch {
			case !strings.HasPrefix(ref.UID, "${") || !ok:
				t.Errorf("%s: %s uses datasource uid %q, want ${<a datasource variable>}", d.file, where, ref.UID)
			case plugin != ref.Type:
				t.Errorf("%s: %s: datasource type %q but variable %s is of %q", d.file, where, ref.Type, name, plugin)
			case ref.Type != clickhouseType && ref.Type != prometheusType:
				t.Errorf("%s: %s: datasource type %q, want %s or %s", d.file, where, ref.Type, clickhouseType, prometheusType)
			}
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				check("variable "+v.Name, v.Datasource)
			}
		}
		for _, p := range d.allPanels() {
			if p.Type == "row" {
				continue
			}
			check("panel "+p.Title, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %s has no query", d.file, p.Title)
			}
			for _, tg := range p.Targets {
				check("panel "+p.Title+" query "+tg.RefID, tg.Datasource)
			}
		}
	}
}
