package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// What a run sets up before it measures. Everything is named after the
// harness's process ID, so that a later run can tell what a killed run left
// behind: network namespaces cgwb-PID-*, the cgroup cgwall-bench-PID.

type runEnv struct {
	tmp  string // rule files and the cgwall binary
	mnt  string // the cgroup2 mount
	root string // the harness's cgroup, absolute
}

func setup(ctx context.Context, cfg *config, c *cleanups, log io.Writer) (*runEnv, error) {
	if err := prerequisites(cfg); err != nil {
		return nil, err
	}
	var err error
	if cfg.repo, err = repoRoot(); err != nil {
		return nil, err
	}
	env := &runEnv{}
	if env.mnt, err = cgroup.Mount(); err != nil {
		return nil, err
	}
	removeStale(env.mnt)
	if env.tmp, err = os.MkdirTemp("", "cgwall-bench-"); err != nil {
		return nil, err
	}
	c.add("remove "+env.tmp, func() error { return os.RemoveAll(env.tmp) })
	if cfg.out == "" {
		cfg.out, err = os.MkdirTemp("", "cgwall-bench-results-")
	} else {
		err = os.MkdirAll(cfg.out, 0o755)
	}
	if err != nil {
		return nil, err
	}
	if cfg.cgwall == "" {
		cfg.cgwall = filepath.Join(env.tmp, "cgwall")
		fmt.Fprintln(log, "building cgwall")
		// As README.md builds it: static, which starts faster.
		cmd := exec.CommandContext(ctx, "go", "build", "-o", cfg.cgwall, "./cmd/cgwall")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Dir = cfg.repo
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/cgwall: %w: %s", err, b)
		}
	}
	env.root = filepath.Join(env.mnt, fmt.Sprintf("cgwall-bench-%d", os.Getpid()))
	if err := os.Mkdir(env.root, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	c.add("remove cgroup "+env.root, func() error { return cgroup.Remove(env.root) })
	return env, nil
}

// prerequisites names the first thing missing.
func prerequisites(cfg *config) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the harness loads BPF programs, creates network namespaces and cgroups")
	}
	if _, err := cgroup.Mount(); err != nil {
		return err
	}
	need := []string{"ip", "nsenter", "sysctl"}
	if cfg.parts["ports"] {
		need = append(need, netfilter[vNft].load[0])
	}
	if cfg.parts["e2e"] {
		for _, nf := range netfilter {
			need = append(need, nf.load[0], nf.unload[0])
		}
	}
	if cfg.parts["dns"] {
		need = append(need, "dnsmasq")
	}
	if cfg.cgwall == "" {
		need = append(need, "go")
	}
	slices.Sort(need)
	var missing []string
	for _, n := range slices.Compact(need) {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: apt-get install -y nftables iptables iproute2 util-linux procps dnsmasq-base", strings.Join(missing, ", "))
	}
	return nil
}

// repoRoot finds the module root at or above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	for ; err == nil && dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/cgwall/cgwall") {
			return dir, nil
		}
	}
	return "", errors.New("run from inside the cgwall repository")
}

// removeStale removes the namespaces and cgroups of earlier runs that were
// killed before they could clean up: their process is gone.
func removeStale(mnt string) {
	for dir, prefix := range map[string]string{"/run/netns": "cgwb-", mnt: "cgwall-bench-"} {
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			if pid, ok := stalePid(ent.Name(), prefix); !ok || syscall.Kill(pid, 0) == nil {
				continue
			}
			if dir == mnt {
				cgroup.Remove(filepath.Join(mnt, ent.Name()))
			} else {
				command(context.Background(), "ip", "netns", "del", ent.Name())
			}
		}
	}
}

// stalePid is the process ID in the name of something a run set up.
func stalePid(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}
