package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// targetFlags name a cgroup: by path, by a process in it, by systemd unit or
// by container.
type targetFlags struct {
	fs        *pflag.FlagSet
	cgroup    string
	pid       string
	unit      string
	container string
}

func (f *targetFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVarP(&f.cgroup, "cgroup", "c", "", "cgroup v2 `PATH`, absolute or relative to the cgroup2 mount")
	fs.StringVar(&f.pid, "pid", "", "the cgroup of process `PID`")
	fs.StringVar(&f.unit, "unit", "", "the cgroup of systemd unit `NAME` (.service if no suffix)")
	fs.StringVar(&f.container, "container", "", "the cgroup of the docker, containerd, podman or CRI-O container `ID` (or unique prefix)")
}

// given names the target flags given on the command line, as --name.
func (f *targetFlags) given() []string {
	var names []string
	for _, n := range []string{"cgroup", "pid", "unit", "container"} {
		if f.fs.Changed(n) {
			names = append(names, "--"+n)
		}
	}
	return names
}

// resolve finds the target cgroup; every error is bad input.
func (f *targetFlags) resolve(cmd string) (cgroup.Dir, error) {
	given := f.given()
	if len(given) > 1 {
		return cgroup.Dir{}, usageErr(fmt.Errorf("%s and %s both name a cgroup: give one", given[0], given[1]))
	}
	var dir cgroup.Dir
	var err error
	flag := "--cgroup"
	switch {
	case f.fs.Changed("pid"):
		flag = "--pid"
		var pid int
		if pid, err = cgroup.ParsePID(f.pid); err == nil {
			dir, err = cgroup.OfPID(pid)
		}
	case f.fs.Changed("unit"):
		flag = "--unit"
		dir, err = cgroup.OfUnit(f.unit)
	case f.fs.Changed("container"):
		flag = "--container"
		dir, err = cgroup.OfContainer(f.container)
	case f.cgroup == "":
		return cgroup.Dir{}, missingCgroup(cmd)
	default:
		dir, err = cgroup.Resolve(f.cgroup)
		if errors.Is(err, cgroup.ErrNoCgroup2) {
			return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup %s: %w", f.cgroup, err))
		}
	}
	if err != nil {
		return cgroup.Dir{}, usageErr(fmt.Errorf("%s: %w", flag, err))
	}
	return dir, nil
}

func missingCgroup(cmd string) error {
	mnt, err := cgroup.Mount()
	if err != nil {
		return usageErr(fmt.Errorf("--cgroup is required, and %w", err))
	}
	return usageErr(fmt.Errorf("--cgroup is required: cgroup2 is mounted at %s; for example: cgwall %s --cgroup %s --block 192.0.2.1 (or name it with --pid, --unit or --container)",
		mnt, cmd, filepath.Join(mnt, "myapp")))
}
