package targets

import (
	"strings"
	"testing"
)

var id = "3f4e1a" + strings.Repeat("0", 52) + "abcdef" // 64 hex digits

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		kind, value string
		want        string // Target.String()
	}{
		{"cgroup", "system.slice/*.service", "cgroup:system.slice/*.service"},
		{"cgroup", "/system.slice/nginx.service", "cgroup:system.slice/nginx.service"},
		{"cgroup", "system.slice/", "cgroup:system.slice"},
		{"cgroup", "./ci//job-[0-9]*", "cgroup:ci/job-[0-9]*"},
		{"cgroup", `system.slice/system-serial\x2dgetty.slice`, `cgroup:system.slice/system-serial\x2dgetty.slice`},
		{"cgroup", "system/sys/fs/cgroup", "cgroup:system/sys/fs/cgroup"},
		{"unit", "nginx", "unit:nginx.service"},
		{"unit", "nginx.service", "unit:nginx.service"},
		{"unit", "app.v2", "unit:app.v2.service"},
		{"unit", "ci-*.scope", "unit:ci-*.scope"},
		{"unit", "ci-*", "unit:ci-*.service"},
		{"unit", "*", "unit:*.service"},
		{"unit", "web.*", "unit:web.*"},
		{"unit", "getty@tty1", "unit:getty@tty1.service"},
		{"unit", "getty@*.service", "unit:getty@*.service"},
		{"unit", "machine.slice", "unit:machine.slice"},
		{"unit", `system-serial\x2dgetty.slice`, `unit:system-serial\x2dgetty.slice`},
		{"container", "3f4e", "container:3f4e"},
		{"container", "3F4E1A", "container:3f4e1a"},
		{"container", id, "container:" + id},
	} {
		got, err := Parse(tc.kind, tc.value, 7)
		if err != nil || got.String() != tc.want || got.Line != 7 {
			t.Errorf("Parse(%q, %q) = %v (line %d), %v; want %s", tc.kind, tc.value, got, got.Line, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	long := strings.Repeat("a", 250) + ".service"
	for _, tc := range []struct {
		kind, value string
		want        string
	}{
		{"pod", "web", `unknown target kind "pod": the kinds are cgroup, unit and container`},
		{"Cgroup", "a", `unknown target kind "Cgroup": the kinds are cgroup, unit and container`},
		{"", "a", `unknown target kind "": the kinds are cgroup, unit and container`},
		{"cgroup", "", "empty cgroup target: give a cgroup path or glob relative to the cgroup2 mount, such as system.slice/*.service"},
		{"unit", "", "empty unit target: give a systemd unit name or glob, such as nginx.service or ci-*.scope"},
		{"container", "", "empty container target: give a container ID or a prefix of it of at least 4 hex digits"},
		{"cgroup", "/", `cgroup "/" is the root cgroup, which holds every process on the host: give a cgroup below it, such as system.slice/*.service`},
		{"cgroup", ".", `cgroup "." is the root cgroup, which holds every process on the host: give a cgroup below it, such as system.slice/*.service`},
		{"cgroup", "//", `cgroup "//" is the root cgroup, which holds every process on the host: give a cgroup below it, such as system.slice/*.service`},
		{"cgroup", "/sys/fs/cgroup", `cgroup "/sys/fs/cgroup" is the root cgroup, which holds every process on the host: give a cgroup below it, such as system.slice/*.service`},
		{"cgroup", "/sys/fs/cgroup/system.slice/*.service", `cgroup "/sys/fs/cgroup/system.slice/*.service" starts with the cgroup2 mount /sys/fs/cgroup: give the path relative to the mount, as "system.slice/*.service"`},
		{"cgroup", "/sys/fs/cgroup/unified/ci", `cgroup "/sys/fs/cgroup/unified/ci" starts with the cgroup2 mount /sys/fs/cgroup/unified: give the path relative to the mount, as "ci"`},
		{"cgroup", "sys/fs/cgroup/ci", `cgroup "sys/fs/cgroup/ci" starts with the cgroup2 mount sys/fs/cgroup: give the path relative to the mount, as "ci"`},
		{"cgroup", "system.slice/../user.slice", `cgroup "system.slice/../user.slice" holds "..": give the path down from the cgroup2 mount, without ".."`},
		{"cgroup", "..", `cgroup ".." holds "..": give the path down from the cgroup2 mount, without ".."`},
		{"cgroup", "system.slice/[a", `cgroup "system.slice/[a" is not a valid glob: a [ has no closing ], or a range in [] is broken; write * ? and [a-z] as Go's path.Match reads them`},
		{"cgroup", "ci/job-[a-]", `cgroup "ci/job-[a-]" is not a valid glob: a [ has no closing ], or a range in [] is broken; write * ? and [a-z] as Go's path.Match reads them`},
		{"unit", "system.slice/nginx.service", `unit "system.slice/nginx.service" is not a unit name: a unit name has no "/" (name a cgroup path with cgroup:)`},
		{"unit", "my app", `unit "my app" is not a unit name: it holds " "; a unit name holds letters, digits and :-_.\@, and a glob *?[]^`},
		{"unit", "ci-[a.scope", `unit "ci-[a.scope" is not a valid glob: a [ has no closing ], or a range in [] is broken; write * ? and [a-z] as Go's path.Match reads them`},
		{"unit", "backup.timer", `unit "backup.timer" is a .timer unit, which has no cgroup to match: give a .service, .scope or .slice unit`},
		{"unit", "multi-user.target", `unit "multi-user.target" is a .target unit, which has no cgroup to match: give a .service, .scope or .slice unit`},
		{"unit", ".service", `unit ".service" is not a unit name: it has no name before .service`},
		{"unit", "@.service", `unit "@.service" is not a unit name: it has no name before .service`},
		{"unit", "getty@.service", `unit "getty@.service" is a template, which has no cgroup: give an instance, as "getty@NAME.service", or a glob, as "getty@*.service"`},
		{"unit", "-.slice", `unit "-.slice" is the root slice, the root cgroup, which holds every process on the host: give a slice below it, such as system.slice`},
		{"unit", long, `unit "` + long[:100] + `"… (258 bytes) is not a unit name: it is 258 bytes long, and systemd's are at most 255`},
		{"container", "web-1", `container "web-1" is not a container ID: give the ID or a prefix of it of at least 4 hex digits ('docker ps --no-trunc' shows them); names are not matched`},
		{"container", "3f4e*", `container "3f4e*" is not a container ID: give the ID or a prefix of it of at least 4 hex digits ('docker ps --no-trunc' shows them); names are not matched`},
		{"container", "3f4", `container "3f4" is too short: give at least 4 hex digits of the ID`},
		{"container", id + "0", `container "` + id + `0" is 65 hex digits long: a container ID has 64`},
	} {
		got, err := Parse(tc.kind, tc.value, 3)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q, %q) = %v, %v\nwant error %s", tc.kind, tc.value, got, err, tc.want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Cgroup: "cgroup", Unit: "unit", Container: "container", Kind(9): "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q; want %q", int(k), got, want)
		}
	}
}
