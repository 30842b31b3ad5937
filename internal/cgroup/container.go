package cgroup

import (
	"fmt"
	"io/fs"
	"regexp"
	"strings"
)

// containerRE takes the 64-hex container ID out of the cgroup folder names
// that docker, containerd, CRI-O and podman create: docker-ID.scope,
// cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope, or a bare ID.
var containerRE = regexp.MustCompile(`^(?:[a-z-]+-)?([0-9a-f]{64})(?:\.scope)?$`)

// OfContainer returns the cgroup of the container whose ID starts with prefix.
func OfContainer(prefix string) (Dir, error) {
	if len(prefix) == 0 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return Dir{}, fmt.Errorf("%q is not a container ID: give hex digits, a unique prefix of the ID", prefix)
	}
	var found []string
	if err := walk(func(path string, d fs.DirEntry) {
		if m := containerRE.FindStringSubmatch(d.Name()); m != nil && strings.HasPrefix(m[1], prefix) {
			found = append(found, path)
		}
	}); err != nil {
		return Dir{}, err
	}
	// A container's own cgroup may hold sub-cgroups named like it (podman's
	// libpod-ID.scope/container); the outermost is the container's.
	found = outermost(found)
	return one(found, fmt.Sprintf("container %s", prefix), "is it running?")
}

func outermost(paths []string) []string {
	var out []string
	for _, p := range paths {
		nested := false
		for _, q := range paths {
			if q != p && strings.HasPrefix(p, q+"/") {
				nested = true
			}
		}
		if !nested {
			out = append(out, p)
		}
	}
	return out
}
