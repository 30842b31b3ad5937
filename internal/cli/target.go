package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// targetFlags name a cgroup: by path, by a process in it, by systemd unit or
// by container.
type targetFlags struct {
	cmd       *cobra.Command
	fs        *pflag.FlagSet
	cgroup    string
	pid       string
	unit      string
	container string
}

func (f *targetFlags) bind(cmd *cobra.Command) {
	f.cmd = cmd
	f.fs = cmd.Flags()
	fs := f.fs
	fs.StringVarP(&f.cgroup, "cgroup", "c", "", "cgroup v2 `PATH`, absolute or relative to the cgroup2 mount; / is the root cgroup, every process on the host")
	fs.StringVar(&f.pid, "pid", "", "the cgroup of process `PID`")
	fs.StringVar(&f.unit, "unit", "", "the cgroup of systemd unit `NAME` (.service if no suffix)")
	fs.StringVar(&f.container, "container", "", "the cgroup of the docker, podman, containerd or CRI-O container `NAME` or ID (or unique ID prefix)")
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
		dir, err = cgroup.OfContainer(f.cmd.Context(), f.container)
	case !f.fs.Changed("cgroup"):
		return cgroup.Dir{}, missingCgroup(cmd)
	default:
		return f.resolvePath()
	}
	if errors.Is(err, cgroup.ErrRoot) {
		err = fmt.Errorf("%w: give --cgroup / if that is really meant", err)
	}
	if err != nil {
		return cgroup.Dir{}, usageErr(fmt.Errorf("%s: %w", flag, err))
	}
	return dir, nil
}

// resolvePath resolves --cgroup. The root cgroup holds every process on the
// host, so only "/" names it, and with a warning; any other path that reaches
// it (".", the mount's own path, a path that cleans to it) is refused as the
// slip it most likely is.
func (f *targetFlags) resolvePath() (cgroup.Dir, error) {
	if f.cgroup == "" {
		return cgroup.Dir{}, usageErr(errors.New(`--cgroup "": an empty path names no cgroup: give a cgroup's path, or --cgroup / if the root cgroup, which holds every process on the host, is really meant`))
	}
	if filepath.Clean(f.cgroup) == "/" {
		root, err := cgroup.Root()
		if err != nil {
			return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup %s: %w", f.cgroup, err))
		}
		fmt.Fprintf(f.cmd.ErrOrStderr(), "warning: --cgroup / is the root cgroup, %s: a policy there governs every process on the host\n", root.Path)
		return root, nil
	}
	dir, err := cgroup.Resolve(f.cgroup)
	switch {
	case errors.Is(err, cgroup.ErrNoCgroup2):
		return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup %s: %w", f.cgroup, err))
	case err != nil:
		return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup: %w", err))
	case cgroup.IsRoot(dir):
		mnt, _ := cgroup.Mount()
		what := "the root cgroup,"
		if f.cgroup != mnt {
			what += " " + mnt + ","
		}
		return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup %s is %s which holds every process on the host: give --cgroup / if that is really meant", f.cgroup, what))
	}
	return dir, nil
}

func missingCgroup(cmd string) error {
	mnt, err := cgroup.Mount()
	if err != nil {
		return usageErr(fmt.Errorf("--cgroup is required, and %w", err))
	}
	example := fmt.Sprintf("cgwall %s --cgroup %s", cmd, filepath.Join(mnt, "myapp"))
	switch cmd {
	case "detach":
		example += " (or every policy: cgwall detach --all)"
	case "block", "allow", "remove":
		example += " 192.0.2.1"
	case "run", "attach":
		example += " --block 192.0.2.1"
	}
	return usageErr(fmt.Errorf("--cgroup is required: cgroup2 is mounted at %s; for example: %s; or name it with --pid, --unit or --container",
		mnt, example))
}

// newCgroup is the cgroup that run --create names: made if it is missing,
// and then removed again, or used as it is if it exists.
type newCgroup struct {
	path    string   // absolute, cleaned
	missing []string // the directories to make, outermost first; none if it exists
	made    []string // the directories made, outermost first
}

// planCreate checks, before anything is made, that the cgroup --cgroup names
// exists or can be made: its nearest existing ancestor must be a cgroup v2
// directory. Every error is bad input.
func (f *targetFlags) planCreate(cmd string) (*newCgroup, error) {
	switch given := f.given(); {
	case len(given) == 1 && given[0] != "--cgroup":
		return nil, usageErr(fmt.Errorf("--create makes the cgroup that --cgroup names, and %s names one that exists: drop --create, or give --cgroup PATH", given[0]))
	case len(given) != 1 || f.cgroup == "":
		// No cgroup named, or two: resolve says which.
		_, err := f.resolve(cmd)
		return nil, err
	}
	path := f.cgroup
	if !filepath.IsAbs(path) {
		mnt, err := cgroup.Mount()
		if err != nil {
			return nil, usageErr(fmt.Errorf("--cgroup %s: %w", f.cgroup, err))
		}
		path = filepath.Join(mnt, path)
	}
	path = filepath.Clean(path)
	if _, err := os.Lstat(path); err == nil {
		// It exists, so there is nothing to make: resolve checks it as
		// it would without --create, the root cgroup's rules included.
		dir, err := f.resolve(cmd)
		if err != nil {
			return nil, err
		}
		return &newCgroup{path: dir.Path}, nil
	}
	if strings.Contains(path, "\n") {
		return nil, usageErr(fmt.Errorf("--cgroup %q: a cgroup name cannot hold a newline", f.cgroup))
	}
	c := &newCgroup{path: path}
	// Walk up to the nearest ancestor that exists. A path through a file
	// (ENOTDIR) walks up to the file, which Resolve then names.
	dir := path
	for {
		_, err := os.Lstat(dir)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return nil, usageErr(fmt.Errorf("--create --cgroup %s: %w", path, err))
		}
		c.missing = append(c.missing, dir)
		dir = filepath.Dir(dir)
	}
	slices.Reverse(c.missing)
	if _, err := cgroup.Resolve(dir); err != nil {
		return nil, usageErr(fmt.Errorf("--create --cgroup %s: %w", path, err))
	}
	return c, nil
}

// make creates the missing directories, outermost first, and returns the
// cgroup. If one cannot be made, those made before it are removed again.
func (c *newCgroup) make() (_ cgroup.Dir, err error) {
	defer func() {
		if err != nil {
			c.remove()
		}
	}()
	for _, d := range c.missing {
		if err := os.Mkdir(d, 0o755); err != nil {
			err = fmt.Errorf("--create: create cgroup %s: %w", d, errors.Unwrap(err))
			if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENAMETOOLONG) {
				return cgroup.Dir{}, usageErr(err)
			}
			return cgroup.Dir{}, failure(err)
		}
		c.made = append(c.made, d)
	}
	dir, err := cgroup.Resolve(c.path)
	if err != nil {
		return cgroup.Dir{}, failure(err)
	}
	return dir, nil
}

// remove removes the directories make made, innermost first. A cgroup that
// still holds processes or child cgroups is left in place: its processes are
// the user's to end or move, not cgwall's.
func (c *newCgroup) remove() error {
	for len(c.made) > 0 {
		d := c.made[len(c.made)-1]
		err := os.Remove(d)
		if errors.Is(err, syscall.EBUSY) {
			// A process that has just exited may keep the cgroup populated
			// for a moment; cgroup.events says when it is empty.
			cgroup.WaitEmpty(d, time.Second)
			err = os.Remove(d)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return failure(fmt.Errorf("left cgroup %s in place: %w: end or move what is in it (its cgroup.procs, its child cgroups), then rmdir it",
				d, errors.Unwrap(err)))
		}
		c.made = c.made[:len(c.made)-1]
	}
	return nil
}
