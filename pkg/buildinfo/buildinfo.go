// Package buildinfo tells which build of Sluice a binary is: the release
// version the build stamped into it and the commit it was built from. Every
// binary prints them for -version (package config), and the container
// images carry the same two values as OCI labels (dev/images).
package buildinfo

import (
	"runtime/debug"
	"sync"
)

// version and revision are set at build time by the linker
// (dev/images/build.sh does):
//
//	-ldflags "-X github.com/sluicehq/sluice/pkg/buildinfo.version=v1.2.3
//	          -X github.com/sluicehq/sluice/pkg/buildinfo.revision=<commit>"
var (
	version  = ""
	revision = ""
)

// Unknown stands for a revision neither the linker flags nor Go's build
// stamp provide.
const Unknown = "unknown"

// Version is the release version the build set, or "dev" for a plain
// go build or go run.
func Version() string {
	if version == "" {
		return "dev"
	}
	return version
}

// Revision is the commit the binary was built from: the one the build set,
// else the vcs.revision Go stamps into a binary built inside a git checkout
// (absent with -buildvcs=false), else Unknown.
func Revision() string {
	if revision != "" {
		return revision
	}
	return stamped()
}

// Line is what -version prints: "<program> <version> (<revision>)".
func Line(program string) string {
	return program + " " + Version() + " (" + Revision() + ")"
}

var stamped = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Unknown
	}
	return fromSettings(bi.Settings)
})

// fromSettings reads the commit from Go's VCS stamp; a build from a
// checkout with uncommitted changes is marked "-dirty", as git describe
// marks it.
func fromSettings(settings []debug.BuildSetting) string {
	rev, modified := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return Unknown
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}
