// Command sender delivers Sluice's webhooks. See app.Config for its settings
// (or run it with -h).
package main

import (
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/sender/app"
)

func main() { service.Main(app.Name, app.LoadConfig, app.Run) }
