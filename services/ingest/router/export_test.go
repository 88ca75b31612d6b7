package router

import (
	"context"

	"github.com/sluicehq/sluice/pkg/dedup"
)

// SetRebuild makes the router rebuild dedup state with f instead of
// dedup.Rebuild, so a test can make rebuilds fail as a broker restart does.
func SetRebuild(o *Options, f func(ctx context.Context, partition int32) (*dedup.Set, int, error)) {
	o.rebuild = f
}
