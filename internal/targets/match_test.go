package targets

import (
	"strings"
	"testing"
)

func mustParse(t *testing.T, kind, value string) Target {
	t.Helper()
	tg, err := Parse(kind, value, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestMatch(t *testing.T) {
	other := "99" + id[2:]
	for _, tc := range []struct {
		kind, value string
		yes, no     []string
	}{
		{"cgroup", "system.slice/*.service",
			[]string{"system.slice/nginx.service", "system.slice/a.service", "/system.slice/b.service/"},
			[]string{"", "system.slice", "system.slice/nginx.service/child", "user.slice/x.service", "system.slice/ci.scope", "a/system.slice/x.service"}},
		{"cgroup", "/ci", []string{"ci"}, []string{"ci/job", "a/ci", ""}},
		{"cgroup", "*", []string{"ci", "system.slice"}, []string{"", "ci/job"}},
		{"cgroup", "*/*", []string{"ci/job"}, []string{"ci", "ci/job/step"}},
		{"cgroup", "*.example", []string{"web.example", ".example"}, []string{"web.example/x", "a/web.example", "web.example.org"}},
		{"cgroup", "ci/job-[0-9]?", []string{"ci/job-12"}, []string{"ci/job-1", "ci/job-a2"}},
		{"cgroup", `system.slice/system-serial\x2dgetty.slice`,
			[]string{`system.slice/system-serial\x2dgetty.slice`}, []string{"system.slice/system-serialx2dgetty.slice"}},
		{"cgroup", "odd/[*]", []string{"odd/*"}, []string{"odd/a"}},
		{"unit", "nginx",
			[]string{"system.slice/nginx.service", "nginx.service", "a/b/c/nginx.service"},
			[]string{"system.slice/nginx.service/child", "system.slice/nginx", "nginx.scope", ""}},
		{"unit", "ci-*.scope",
			[]string{"user.slice/user-1000.slice/ci-42.scope", "ci-.scope"},
			[]string{"ci-42.service", "ci-42.scope/payload", "ci-42"}},
		{"unit", "*.example", nil, []string{"web.example", "a/web.example"}}, // *.example.service
		{"unit", "*.example.service", []string{"a/web.example.service"}, []string{"web.example"}},
		{"unit", "web.*", []string{"system.slice/web.service", "web.scope", "machine.slice/web.slice"}, []string{"web.d", "web.timer", "web.example"}},
		{"unit", "machine.slice", []string{"machine.slice"}, []string{"machine.slice/x.scope"}},
		{"unit", "getty@*", []string{"system.slice/system-getty.slice/getty@tty1.service"}, []string{"system.slice/system-getty.slice"}},
		{"container", "3F4E",
			[]string{
				"system.slice/docker-" + id + ".scope",
				"docker/" + id,
				"kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope",
				"machine.slice/libpod-" + id + ".scope",
				"crio-" + id + ".scope",
			},
			[]string{
				"machine.slice/libpod-" + id + ".scope/container",
				"system.slice/docker-" + id + ".scope/" + id, // nested in its own cgroup
				"system.slice/docker-" + other + ".scope",
				"system.slice/docker-3f4e.scope",
				"3f4e", "",
			}},
		{"container", id,
			[]string{"docker/" + other + "/docker/" + id}, // docker in docker: another container's ID outside
			[]string{"docker/" + other}},
	} {
		tg := mustParse(t, tc.kind, tc.value)
		for _, rel := range tc.yes {
			if !tg.Match(rel) {
				t.Errorf("%v does not match %q; it should", tg, rel)
			}
		}
		for _, rel := range tc.no {
			if tg.Match(rel) {
				t.Errorf("%v matches %q; it should not", tg, rel)
			}
		}
	}
}

func TestMatchByHand(t *testing.T) {
	// A Target made without Parse still matches as its kind says.
	if !(Target{Kind: Container, Pattern: strings.ToUpper(id[:6])}).Match("docker-" + id + ".scope") {
		t.Error("an upper-case container prefix does not match")
	}
	if !(Target{Kind: Cgroup, Pattern: "/ci"}).Match("ci") {
		t.Error("a cgroup pattern with a leading / does not match")
	}
	if (Target{Kind: Kind(9), Pattern: "*"}).Match("ci") {
		t.Error("an unknown kind matches")
	}
}

func TestMatches(t *testing.T) {
	ts := []Target{mustParse(t, "unit", "nginx"), mustParse(t, "cgroup", "ci/*")}
	for rel, want := range map[string]bool{
		"system.slice/nginx.service": true,
		"ci/job":                     true,
		"ci":                         false,
		"":                           false,
	} {
		if got := Matches(ts, rel); got != want {
			t.Errorf("Matches(%q) = %v; want %v", rel, got, want)
		}
	}
	if Matches(nil, "ci") {
		t.Error("no targets match")
	}
}
