package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// resolveCgroup turns --cgroup into a cgroup directory; every error is bad input.
func resolveCgroup(cmd, path string) (cgroup.Dir, error) {
	if path == "" {
		mnt, err := cgroup.Mount()
		if err != nil {
			return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup is required, and %w", err))
		}
		return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup is required: cgroup2 is mounted at %s; for example: cgwall %s --cgroup %s --block 192.0.2.1",
			mnt, cmd, filepath.Join(mnt, "myapp")))
	}
	dir, err := cgroup.Resolve(path)
	if err != nil {
		if errors.Is(err, cgroup.ErrNoCgroup2) {
			return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup %s: %w", path, err))
		}
		return cgroup.Dir{}, usageErr(fmt.Errorf("--cgroup: %w", err))
	}
	return dir, nil
}
