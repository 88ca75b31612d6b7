// Command logwriter streams Sluice's delivery attempts and event log into
// ClickHouse. See app.Config for its settings (or run it with -h).
package main

import (
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/logwriter/app"
)

func main() { service.Main(app.Name, app.LoadConfig, app.Run) }
