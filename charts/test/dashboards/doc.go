// Package dashboardtest tests the Grafana dashboards in
// charts/sluice/dashboards. Every ClickHouse query of a panel or a template
// variable has its template variables and the grafana-clickhouse-datasource
// macros expanded as Grafana and the plugin (v4) expand them, and runs on the
// dev stack's ClickHouse 18.16 and on chDB, the current ClickHouse engine,
// both holding the logwriter's schema and the same sample rows; each result
// must have the columns the panel expects and rows where the sample has data.
// Every Prometheus expression is parsed with Prometheus's own parser and its
// metric and label names are checked against what the services' exporter
// exposes for the metric contract.
package dashboardtest
