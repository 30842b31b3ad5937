package cli

import (
	"runtime/debug"
	"testing"
)

func TestDescribeBuild(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		info debug.BuildInfo
		want string
	}{
		{"a release", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			"v1.2.3\nbuilt with go1.26.8"},
		{"a checkout", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20260101120000-5a540be9bedf"},
			Settings: vcs("vcs", "git", "vcs.revision", "5a540be9bedf880bf4662b1dbc51264354023493", "vcs.time", "2026-01-01T12:00:00Z", "vcs.modified", "false")},
			"v0.0.0-20260101120000-5a540be9bedf\ncommit 5a540be9bedf880bf4662b1dbc51264354023493\ncommitted 2026-01-01T12:00:00Z\nbuilt with go1.26.8"},
		{"changed since", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs.revision", "5a540be9", "vcs.modified", "true")},
			"(devel)\ncommit 5a540be9 (with uncommitted changes)\nbuilt with go1.26.8"},
		{"no version", debug.BuildInfo{GoVersion: "go1.26.8"}, "(devel)\nbuilt with go1.26.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeBuild(&tc.info); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
