package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// TestRunBadInput checks that each bad input is named in one line, exits 2 and
// leaves nothing attached.
func TestRunBadInput(t *testing.T) {
	cg, _ := testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"address out of range", []string{"--cgroup", cg, "--block", "1.1.1.300"}, `"1.1.1.300" is not a valid IPv4 or IPv6 address`},
		{"prefix too long", []string{"--cgroup", cg, "--block", "10.0.0.0/33"}, `"10.0.0.0/33" is not a valid CIDR`},
		{"IPv6 prefix too long", []string{"--cgroup", cg, "--block", "2001:db8::/129"}, `"2001:db8::/129" is not a valid CIDR`},
		{"empty address", []string{"--cgroup", cg, "--block", ""}, "--block: empty address"},
		{"host bits set", []string{"--cgroup", cg, "--block", "10.0.0.1/8"}, "did you mean 10.0.0.0/8"},
		{"bad address after good ones", []string{"--cgroup", cg, "--block", "192.0.2.1", "--block", "nope"}, `"nope" is not a valid`},
		{"port 0", []string{"--cgroup", cg, "--block", "192.0.2.1:0"}, `--block: "192.0.2.1:0": "0" is not a port: use a number from 1 to 65535`},
		{"reversed port range", []string{"--cgroup", cg, "--allow", "192.0.2.0/24:tcp/9000-8000"}, `--allow: "192.0.2.0/24:tcp/9000-8000": range "9000-8000" is reversed: write 8000-9000`},
		{"IPv6 port without brackets' colon", []string{"--cgroup", cg, "--block-in", "[2001:db8::1]443"}, `--block-in: "[2001:db8::1]443" has "443" after the bracket`},
		{"bad port rule after good ones", []string{"--cgroup", cg, "--block", "192.0.2.1:tcp/443", "--block", "any:icmp/8"}, `--block: "any:icmp/8": icmp has no ports: write icmp alone`},
		{"missing cgroup", []string{"--cgroup", cg + "/nope", "--block", "192.0.2.1"}, cg + "/nope does not exist"},
		{"cgroup is a file", []string{"--cgroup", cg + "/cgroup.procs", "--block", "192.0.2.1"}, cg + "/cgroup.procs is not a directory"},
		{"not a cgroup", []string{"--cgroup", t.TempDir(), "--block", "192.0.2.1"}, "is not in a cgroup v2 hierarchy"},
		{"no --cgroup", []string{"--block", "192.0.2.1"}, "--cgroup is required: cgroup2 is mounted at " + mnt + "; for example: cgwall run --cgroup "},
		{"bad log level", []string{"--cgroup", cg, "--log", "some"}, `--log: "some" is not a log level`},
		{"bad format", []string{"--cgroup", cg, "--format", "xml"}, `--format: "xml" is not an output format`},
		{"unknown flag", []string{"--cgroup", cg, "--blok", "192.0.2.1"}, "unknown flag: --blok"},
		{"stray argument", []string{"--cgroup", cg, "192.0.2.1"}, `unknown command "192.0.2.1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCgwall(t, append([]string{"run"}, tc.args...)...)
			checkOneLineError(t, stderr, code, 2, tc.want)
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached after a failed run", n)
			}
		})
	}
}

func checkOneLineError(t *testing.T, stderr string, code, wantCode int, want string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d; stderr %q", code, wantCode, stderr)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "cgwall: ") || !strings.Contains(stderr, want) {
		t.Errorf("stderr %q: want one line containing %q", stderr, want)
	}
}

// inMountNamespace runs a shell script in a private mount namespace, so that
// what it mounts or unmounts never touches the host, and returns cgwall's
// stderr and exit code. The script ends by exec-ing cgwall ("$CGWALL").
func inMountNamespace(t *testing.T, script string) (string, int) {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-ec", script)
	cmd.Env = append(cmd.Environ(), "CGWALL="+cgwallBin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Run()
	return stderr.String(), cmd.ProcessState.ExitCode()
}

func TestRunNoCgroup2Mount(t *testing.T) {
	testCgroup(t)
	stderr, code := inMountNamespace(t, `
		while mnt=$(awk '$(NF-2) == "cgroup2" { print $5; exit }' /proc/self/mountinfo) && [ -n "$mnt" ]; do
			umount -l "$mnt"
		done
		exec "$CGWALL" run --cgroup myapp --block 192.0.2.1`)
	checkOneLineError(t, stderr, code, 2, "no cgroup2 filesystem is mounted")

	stderr, code = inMountNamespace(t, `
		while mnt=$(awk '$(NF-2) == "cgroup2" { print $5; exit }' /proc/self/mountinfo) && [ -n "$mnt" ]; do
			umount -l "$mnt"
		done
		exec "$CGWALL" run --block 192.0.2.1`)
	checkOneLineError(t, stderr, code, 2, "--cgroup is required, and no cgroup2 filesystem is mounted")
}

func TestRunCgroupV1(t *testing.T) {
	testCgroup(t)
	dir := t.TempDir()
	stderr, code := inMountNamespace(t, `
		mount -t cgroup -o none,name=cgwall-e2e cgwall-e2e `+dir+`
		exec "$CGWALL" run --cgroup `+dir+` --block 192.0.2.1`)
	checkOneLineError(t, stderr, code, 2, dir+" is not in a cgroup v2 hierarchy (it is cgroup v1)")
}

func TestRunWithoutPrivileges(t *testing.T) {
	cg, _ := testCgroup(t)
	for _, tc := range []struct {
		name    string
		setpriv []string
		want    string
	}{
		{"not root", []string{"--reuid=65534", "--regid=65534", "--clear-groups"}, "missing privilege CAP_BPF and CAP_NET_ADMIN: run cgwall as root"},
		{"root without CAP_BPF", []string{"--bounding-set=-bpf,-sys_admin"}, "missing privilege CAP_BPF:"},
		{"root without CAP_NET_ADMIN", []string{"--bounding-set=-net_admin,-sys_admin"}, "missing privilege CAP_NET_ADMIN:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.setpriv, cgwallBin, "run", "--cgroup", cg, "--block", "192.0.2.1")
			cmd := exec.Command("setpriv", args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			cmd.Run()
			checkOneLineError(t, stderr.String(), cmd.ProcessState.ExitCode(), 1, tc.want)
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached", n)
			}
		})
	}
}
