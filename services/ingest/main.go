// Command ingest serves Sluice's public HTTP API. See app.Config for its
// settings (or run it with -h).
package main

import (
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/ingest/app"
)

func main() { service.Main(app.Name, app.LoadConfig, app.Run) }
