package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromSettings(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		settings []debug.BuildSetting
		want     string
	}{
		{"no VCS stamp (go run, -buildvcs=false)", nil, Unknown},
		{"clean checkout", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}, "abc123"},
		{"uncommitted changes", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: "abc123"}}, "abc123-dirty"},
		{"modified without a revision", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, Unknown},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := fromSettings(tc.settings); got != tc.want {
				t.Fatalf("fromSettings = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLine(t *testing.T) {
	defer func(v, r string) { version, revision = v, r }(version, revision)

	version, revision = "", ""
	if got, want := Line("sluice-x"), "sluice-x dev ("+stamped()+")"; got != want {
		t.Fatalf("unstamped: Line = %q, want %q", got, want)
	}
	version, revision = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"
	if got, want := Line("sluice-x"), "sluice-x v1.2.3 (0123456789abcdef0123456789abcdef01234567)"; got != want {
		t.Fatalf("linker-set: Line = %q, want %q", got, want)
	}
}
