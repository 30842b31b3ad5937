package cli

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// version describes this build for --version, from what the Go toolchain
// records in the binary: the module's version, and the commit it was built
// from, its time and whether the tree had changes, where the build had them.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (the binary carries no build information)"
	}
	return describeBuild(info)
}

func describeBuild(info *debug.BuildInfo) string {
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var b strings.Builder
	b.WriteString(v)
	vcs := map[string]string{}
	for _, s := range info.Settings {
		vcs[s.Key] = s.Value
	}
	if rev := vcs["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, "\ncommit %s", rev)
		if vcs["vcs.modified"] == "true" {
			b.WriteString(" (with uncommitted changes)")
		}
	}
	if t := vcs["vcs.time"]; t != "" {
		fmt.Fprintf(&b, "\ncommitted %s", t)
	}
	fmt.Fprintf(&b, "\nbuilt with %s", info.GoVersion)
	return b.String()
}
