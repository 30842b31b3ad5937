package targets

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
)

// Walk returns every cgroup under the cgroup2 mount mnt, as paths relative to
// it, sorted, so that a cgroup comes before those inside it. The root itself
// is left out: it is never a target.
func Walk(mnt string) ([]string, error) {
	mnt = filepath.Clean(mnt)
	var rels []string
	err := filepath.WalkDir(mnt, func(abs string, d fs.DirEntry, err error) error {
		switch {
		case err != nil && abs == mnt:
			return err
		case errors.Is(err, fs.ErrNotExist):
			return nil // removed while the walk went by
		case err != nil:
			return err
		case !d.IsDir() || abs == mnt:
			return nil
		}
		rels = append(rels, relTo(mnt, abs))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the cgroups under %s: %w", mnt, err)
	}
	sort.Strings(rels)
	return rels, nil
}

// relTo is abs relative to mnt, "/"-separated.
func relTo(mnt, abs string) string {
	rel, err := filepath.Rel(mnt, abs)
	if err != nil {
		return abs // not under mnt: cannot happen for paths built from it
	}
	return filepath.ToSlash(rel)
}
