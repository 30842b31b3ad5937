// Package targets says which cgroups an agent policy file governs: the items
// of its targets: list, the cgroups each matches, and a watcher of the cgroup2
// tree that reports cgroups as they come and go.
//
// Every cgroup is named by its path relative to the cgroup2 mount, without a
// leading slash and "/"-separated ("system.slice/nginx.service"). The root
// cgroup ("") holds every process on the host and is never a target.
//
// A target is one of three kinds:
//
//   - cgroup: a path or glob matched against the whole relative path with
//     path.Match, so each "*" stays within one segment ("system.slice/*"
//     matches system.slice/a.service, not system.slice/a.service/b). A leading
//     "/" is ignored; a path that starts with the mount itself
//     (/sys/fs/cgroup/...) is refused with the relative path to give instead,
//     so that a file reads the same on unified and hybrid hosts.
//   - unit: a systemd unit name or glob. NAME without a unit suffix is
//     NAME.service, as systemctl reads it (cgroup.UnitName); a glob whose
//     suffix is itself a glob ("ci.*") is kept as it is. It is matched against
//     the last element of every cgroup named for a .service, .scope or .slice
//     unit, at any depth: those are the units that have cgroups.
//   - container: a container ID or a prefix of one, 4 to 64 hex digits, in
//     either case. It matches the outermost cgroup named for a container whose
//     ID starts with it (docker/ID from docker's cgroupfs driver,
//     docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope,
//     libpod-ID.scope: cgroup.ContainerID); a cgroup inside one named for the
//     same ID (a runtime's own sub-cgroup) is governed through it and does
//     not match again. Names are not matched: a cgroup does not carry one.
//
// In cgroup and unit patterns a backslash is a plain character, as in the
// names systemd escapes ("system-serial\x2dgetty.slice"); [*], [?] and [[]
// match those characters literally.
//
// Walk lists the tree as it is; Watch follows it. Call Watch before Walk: a
// cgroup made between the two is then reported twice rather than missed.
package targets

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// Kind is what a target names a cgroup by.
type Kind int

const (
	Cgroup    Kind = iota // a path or glob relative to the cgroup2 mount
	Unit                  // a systemd unit name or glob
	Container             // a container ID or ID prefix
)

// kindNames are the kinds as a policy file spells them, by Kind.
var kindNames = []string{"cgroup", "unit", "container"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Target is one item of a policy file's targets: list.
type Target struct {
	Kind    Kind
	Pattern string // as Parse made it: relative, with the unit suffix, lower case
	Line    int    // the line of the item in the YAML file, 0 if none
}

// String gives the target as "KIND:PATTERN".
func (t Target) String() string { return t.Kind.String() + ":" + t.Pattern }

// Parse reads one item of a targets: list: kind is its key, value its string
// and line where it is, kept in the Target for messages. The error names the
// value and says what would do; the caller adds the file and line.
func Parse(kind, value string, line int) (Target, error) {
	k := Kind(slices.Index(kindNames, kind))
	if k < 0 {
		return Target{}, fmt.Errorf("unknown target kind %s: the kinds are cgroup, unit and container", quote(kind))
	}
	if value == "" {
		return Target{}, fmt.Errorf("empty %s target: give %s", k, examples[k])
	}
	var pattern string
	var err error
	switch k {
	case Cgroup:
		pattern, err = parseCgroup(value)
	case Unit:
		pattern, err = parseUnit(value)
	case Container:
		pattern, err = parseContainer(value)
	}
	if err != nil {
		return Target{}, err
	}
	return Target{Kind: k, Pattern: pattern, Line: line}, nil
}

// examples say what each kind takes, for messages.
var examples = []string{
	Cgroup:    "a cgroup path or glob relative to the cgroup2 mount, such as system.slice/*.service",
	Unit:      "a systemd unit name or glob, such as nginx.service or ci-*.scope",
	Container: "a container ID or a prefix of it of at least 4 hex digits",
}

// mountPrefixes are where cgroup2 is mounted on most hosts, longest first: a
// pattern that starts with one was written as an absolute path. The mount of
// this host is checked as well.
var mountPrefixes = []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}

func parseCgroup(value string) (string, error) {
	if mnt, ok := mountIn(value); ok {
		rel := strings.Trim(strings.TrimPrefix(value, mnt), "/")
		if rel == "" {
			return "", rootError(value)
		}
		return "", fmt.Errorf("cgroup %s starts with the cgroup2 mount %s: give the path relative to the mount, as %s", quote(value), mnt, quote(rel))
	}
	if slices.Contains(strings.Split(value, "/"), "..") {
		return "", fmt.Errorf("cgroup %s holds \"..\": give the path down from the cgroup2 mount, without \"..\"", quote(value))
	}
	// Clean drops a leading or trailing "/", "." and doubled slashes; a glob
	// has no other meaning for them.
	pattern := strings.TrimPrefix(path.Clean("/"+value), "/")
	if pattern == "" {
		return "", rootError(value)
	}
	if err := checkGlob(pattern); err != nil {
		return "", fmt.Errorf("cgroup %s is not a valid glob: %s", quote(value), err)
	}
	return pattern, nil
}

// mountIn says whether a cgroup pattern starts with a cgroup2 mount, whole
// segments, and which.
func mountIn(value string) (string, bool) {
	candidates := mountPrefixes
	if mnt, err := cgroup.Mount(); err == nil && mnt != "/" {
		candidates = append([]string{mnt}, candidates...)
	}
	for _, mnt := range candidates {
		for _, prefix := range []string{mnt, strings.TrimPrefix(mnt, "/")} {
			if value == prefix || strings.HasPrefix(value, prefix+"/") {
				return prefix, true
			}
		}
	}
	return "", false
}

func rootError(value string) error {
	return fmt.Errorf("cgroup %s is the root cgroup, which holds every process on the host: give a cgroup below it, such as system.slice/*.service", quote(value))
}

// unitTypes are the unit types whose units have cgroups of their own.
var unitTypes = []string{".service", ".scope", ".slice"}

// unitChars are the characters of a systemd unit name (letters and digits
// aside), and globChars those that path.Match reads in a pattern.
const (
	unitChars = `:-_.\@`
	globChars = `*?[]^`
)

// maxUnitName is systemd's longest unit name, in bytes.
const maxUnitName = 255

func parseUnit(value string) (string, error) {
	if strings.Contains(value, "/") {
		return "", fmt.Errorf("unit %s is not a unit name: a unit name has no \"/\" (name a cgroup path with cgroup:)", quote(value))
	}
	if i := strings.IndexFunc(value, func(r rune) bool { return !isUnitRune(r) }); i >= 0 {
		return "", fmt.Errorf("unit %s is not a unit name: it holds %q; a unit name holds letters, digits and %s, and a glob %s", quote(value), value[i:i+1], unitChars, globChars)
	}
	pattern := value
	if !strings.ContainsAny(unitSuffix(value), globChars) {
		pattern = cgroup.UnitName(value)
	}
	if len(pattern) > maxUnitName {
		return "", fmt.Errorf("unit %s is not a unit name: it is %d bytes long, and systemd's are at most %d", quote(value), len(pattern), maxUnitName)
	}
	if err := checkUnit(value, pattern); err != nil {
		return "", err
	}
	if err := checkGlob(pattern); err != nil {
		return "", fmt.Errorf("unit %s is not a valid glob: %s", quote(value), err)
	}
	return pattern, nil
}

// checkUnit refuses unit names that no cgroup is named for.
func checkUnit(value, pattern string) error {
	suffix := unitSuffix(pattern)
	stem := strings.TrimSuffix(pattern, suffix)
	switch {
	case strings.ContainsAny(suffix, globChars):
		return nil
	case !slices.Contains(unitTypes, suffix):
		return fmt.Errorf("unit %s is a %s unit, which has no cgroup to match: give a .service, .scope or .slice unit", quote(value), suffix)
	case stem == "" || stem == "@":
		return fmt.Errorf("unit %s is not a unit name: it has no name before %s", quote(value), suffix)
	case strings.HasSuffix(stem, "@"):
		return fmt.Errorf("unit %s is a template, which has no cgroup: give an instance, as %s, or a glob, as %s", quote(value), quote(stem+"NAME"+suffix), quote(stem+"*"+suffix))
	case pattern == "-.slice":
		return fmt.Errorf("unit %s is the root slice, the root cgroup, which holds every process on the host: give a slice below it, such as system.slice", quote(value))
	}
	return nil
}

// unitSuffix is the part of a unit name from its last dot, "" if none.
func unitSuffix(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[i:]
	}
	return ""
}

func isUnitRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune(unitChars+globChars, r)
}

// Container IDs are 64 hex digits; a prefix shorter than 4 would match
// containers by chance.
const (
	minContainerPrefix = 4
	containerIDLen     = 64
)

func parseContainer(value string) (string, error) {
	id := strings.ToLower(value)
	switch {
	case strings.Trim(id, "0123456789abcdef") != "":
		return "", fmt.Errorf("container %s is not a container ID: give the ID or a prefix of it of at least %d hex digits ('docker ps --no-trunc' shows them); names are not matched", quote(value), minContainerPrefix)
	case len(id) < minContainerPrefix:
		return "", fmt.Errorf("container %s is too short: give at least %d hex digits of the ID", quote(value), minContainerPrefix)
	case len(id) > containerIDLen:
		return "", fmt.Errorf("container %s is %d hex digits long: a container ID has %d", quote(value), len(id), containerIDLen)
	}
	return id, nil
}

// checkGlob says why a pattern is not one path.Match reads, as "syntax
// error in pattern" alone would not.
func checkGlob(pattern string) error {
	if _, err := path.Match(literal(pattern), ""); err != nil {
		return errors.New("a [ has no closing ], or a range in [] is broken; write * ? and [a-z] as Go's path.Match reads them")
	}
	return nil
}

// literal makes backslashes in a pattern plain characters for path.Match,
// which would read them as escapes.
func literal(pattern string) string { return strings.ReplaceAll(pattern, `\`, `\\`) }

// maxQuoted is the longest value quoted whole in a message.
const maxQuoted = 100

func quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}
