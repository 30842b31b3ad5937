package targets

import (
	"path"
	"slices"
	"strings"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// Match says whether the cgroup at rel, a path relative to the cgroup2 mount
// ("system.slice/foo.service"), is one that t names. The root cgroup never
// is.
func (t Target) Match(rel string) bool {
	rel = strings.Trim(rel, "/")
	if rel == "" {
		return false
	}
	switch t.Kind {
	case Cgroup:
		return glob(strings.TrimPrefix(t.Pattern, "/"), rel)
	case Unit:
		return matchUnit(t.Pattern, path.Base(rel))
	case Container:
		return matchContainer(strings.ToLower(t.Pattern), rel)
	}
	return false
}

// Matches reports whether any of ts matches rel.
func Matches(ts []Target, rel string) bool {
	return slices.ContainsFunc(ts, func(t Target) bool { return t.Match(rel) })
}

// matchUnit matches a unit pattern against a cgroup's own name, if that is
// named for a unit with a cgroup: a glob such as "ci.*" must not take a
// folder that only looks like one ("ci.d").
func matchUnit(pattern, name string) bool {
	if !slices.Contains(unitTypes, unitSuffix(name)) {
		return false
	}
	return glob(pattern, name)
}

// matchContainer says whether rel is the outermost cgroup named for a
// container whose ID starts with prefix.
func matchContainer(prefix, rel string) bool {
	elems := strings.Split(rel, "/")
	id, ok := cgroup.ContainerID(elems[len(elems)-1])
	if !ok || !strings.HasPrefix(id, prefix) {
		return false
	}
	for _, e := range elems[:len(elems)-1] {
		if outer, ok := cgroup.ContainerID(e); ok && outer == id {
			return false
		}
	}
	return true
}

func glob(pattern, name string) bool {
	ok, _ := path.Match(literal(pattern), name)
	return ok
}
