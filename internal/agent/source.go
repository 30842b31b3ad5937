package agent

import (
	"path/filepath"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/metrics"
	"github.com/cgwall/cgwall/internal/store"
)

// Policies calls fn with each cgroup the agent knows, its policy opened from
// the store without the store's lock, so that a scrape never waits for a
// command nor makes one wait (metrics.Source).
func (a *Agent) Policies(fn func(metrics.Policy)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := store.ViewAt(a.cfg.StoreRoot)
	if err != nil {
		s = nil
	}
	for id, st := range a.states {
		p := metrics.Policy{Cgroup: st.rel, File: filepath.Base(st.file), State: st.state}
		var d *datapath.Datapath
		if s != nil && st.state != metrics.Conflict && s.Exists(id) {
			if d, err = s.Open(id); err == nil {
				p.Datapath = d
			}
		}
		fn(p)
		if d != nil {
			d.Close()
		}
	}
	if s != nil {
		s.Close()
	}
}

// Files gives each policy file's state: in force when its last reading was
// good, bad when not (metrics.Source).
func (a *Agent) Files() map[string]metrics.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]metrics.State, len(a.files))
	for _, f := range a.files {
		out[f.name()] = metrics.InForce
		if f.err != nil {
			out[f.name()] = metrics.BadFile
		}
	}
	return out
}
