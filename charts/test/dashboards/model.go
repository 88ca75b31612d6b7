package dashboardtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// dashboardDir is the chart's folder of dashboards, relative to this package.
const dashboardDir = "../../sluice/dashboards"

// The parts of Grafana's dashboard JSON model the tests read.
type dashboard struct {
	file          string
	UID           string     `json:"uid"`
	Title         string     `json:"title"`
	SchemaVersion int        `json:"schemaVersion"`
	Panels        []panel    `json:"panels"`
	Templating    templating `json:"templating"`
}

type templating struct {
	List []variable `json:"list"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []target       `json:"targets"`
	Panels     []panel        `json:"panels"` // a collapsed row's
}

type target struct {
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
	// grafana-clickhouse-datasource
	RawSQL     string `json:"rawSql"`
	EditorType string `json:"editorType"`
	QueryType  string `json:"queryType"`
	// prometheus
	Expr string `json:"expr"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *datasourceRef  `json:"datasource"`
	Query      json.RawMessage `json:"query"`
}

// chQuery is a ClickHouse variable's query object.
type chQuery struct {
	RawSQL     string `json:"rawSql"`
	EditorType string `json:"editorType"`
}

func jsonString(raw json.RawMessage, s *string) error { return json.Unmarshal(raw, s) }

func loadDashboards() ([]dashboard, error) {
	files, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", f, err)
		}
		d.file = filepath.Base(f)
		out = append(out, d)
	}
	return out, nil
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// query is one SQL or PromQL text of a dashboard, named for messages.
type query struct {
	Where string // "file: panel title" or "file: variable name"
	Key   string // panel title or "$variable": the expectations' key
	Kind  string // table or timeseries (SQL), or "promql"
	Text  string
}

// Datasource variables the panels must reference, by plugin type.
const (
	clickhouseType = "grafana-clickhouse-datasource"
	prometheusType = "prometheus"
)
