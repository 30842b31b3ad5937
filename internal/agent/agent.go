// Package agent is cgwall's daemon: it applies the policy files of a folder
// to every cgroup their targets name, as cgroups come and go and files
// change, and owns the persistent policies it attached.
//
// Enforcement never depends on the agent: what it applies is a persistent
// policy in the store, as 'cgwall attach' makes, with an owner record that
// names the agent, the file and a digest of the policy. The agent replaces
// and removes only the policies it owns, so that one attached by hand on a
// cgroup a file targets is reported as a conflict, not overwritten; and a
// restarted agent adopts what it owns without detaching it, so there is no
// gap.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/cgwall/cgwall/internal/metrics"
	"github.com/cgwall/cgwall/internal/store"
	"github.com/cgwall/cgwall/internal/targets"
)

// Config is what the agent runs with.
type Config struct {
	Policies  string       // the folder of policy files
	Mount     string       // the cgroup2 mount
	StoreRoot string       // the store's folder: store.DefaultRoot, or a test's
	Log       *slog.Logger // where what it does is told
	// Reload asks for everything to be read again (SIGHUP): the files,
	// the lists they name and the cgroup tree.
	Reload <-chan struct{}
	// DNS, if set, serves the DNS of the policies with name rules; without
	// it, a file with name rules is bad.
	DNS *DNS
	// Socket, if set, is where the API answers (ListenAPI), recorded in
	// the store so that 'cgwall list' finds it.
	Socket string
	// Applied, if set, is called with the cgroup each time the agent has
	// put a policy in force there (tests and benchmarks wait on it).
	Applied func(rel string)
}

// Ready is what the agent has in force when it is ready.
type Ready struct {
	Policies int // policy files read good
	Cgroups  int // cgroups with a policy of the agent's in force
}

// Agent is the daemon's state: the files as last read, the cgroups that
// exist, and what it applied where. mu guards all of it, for the metrics,
// which read it from another goroutine.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Metrics // nil: none

	mu      sync.Mutex
	files   map[string]*file  // by absolute path
	cgroups map[string]uint64 // the cgroups that exist, relative path to ID
	states  map[uint64]*cgroupState
}

// cgroupState is what the agent knows of one cgroup that a file targets or
// whose policy it owns.
type cgroupState struct {
	rel   string
	file  string // the file whose policy is in force, or that targets it
	state metrics.State
	why   string // what the last log said of a conflict, so as to say it once
}

// New checks cfg and returns an agent that has done nothing yet.
func New(cfg Config) (*Agent, error) {
	if cfg.Policies == "" || cfg.Mount == "" || cfg.StoreRoot == "" || cfg.Log == nil {
		return nil, errors.New("agent: incomplete configuration")
	}
	dir, err := filepath.Abs(cfg.Policies)
	if err != nil {
		return nil, err
	}
	cfg.Policies = dir
	return &Agent{cfg: cfg, log: cfg.Log, files: map[string]*file{}, cgroups: map[string]uint64{}, states: map[uint64]*cgroupState{}}, nil
}

// SetMetrics makes the agent count what it does in m, whose source it is.
// Call it before Run.
func (a *Agent) SetMetrics(m *metrics.Metrics) {
	a.metrics = m
	if a.cfg.DNS != nil {
		a.cfg.DNS.metrics = m
	}
}

// settle is how long the agent waits for a burst of file events to end
// before it reads the files: an editor's save is several events, and a copy
// of a big file many writes.
const settle = 100 * time.Millisecond

// Run applies the policies, calls ready once every cgroup that exists has
// its policy, then follows cgroups and files until ctx is done. It returns
// nil when ctx ends it, leaving every policy in force, and an error only
// when it cannot watch the cgroup tree or the folder.
func (a *Agent) Run(ctx context.Context, ready func(Ready)) error {
	// The watches go first, so that nothing that happens while the agent
	// reads what is there is missed.
	dirWatch, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", a.cfg.Policies, err)
	}
	defer dirWatch.Close()
	if err := dirWatch.Add(a.cfg.Policies); err != nil {
		return fmt.Errorf("watch %s: %w", a.cfg.Policies, err)
	}
	cgWatch, err := targets.Watch(a.cfg.Mount)
	if err != nil {
		return fmt.Errorf("watch the cgroup tree at %s: %w", a.cfg.Mount, err)
	}
	defer cgWatch.Close()

	if err := a.record(ctx, true); err != nil {
		return err
	}
	defer a.record(context.WithoutCancel(ctx), false)
	if err := a.full(ctx, true); err != nil {
		return err
	}
	// /healthz says ready before the ready line does: whoever waits on the
	// line may ask /healthz at once (TestAgentMetrics did, and met 503).
	if a.metrics != nil {
		a.metrics.SetReady()
	}
	ready(a.ready())

	var filesChanged <-chan time.Time // set while a burst of file events settles
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.Reload:
			a.log.Info("reloading: reading every file and the cgroup tree again")
			a.report(a.full(ctx, true))
		case <-dirWatch.Events:
			// Any name: a ConfigMap changes its files by renaming its
			// ..data symlink, and a file read the same is no change.
			if filesChanged == nil {
				filesChanged = time.After(settle)
			}
		case err := <-dirWatch.Errors:
			a.log.Warn("watching the policies folder", "error", err)
			filesChanged = time.After(settle)
		case <-filesChanged:
			filesChanged = nil
			a.report(a.full(ctx, false))
		case ev := <-cgWatch.Events():
			a.report(a.cgroupEvent(ctx, ev))
		case err := <-cgWatch.Errors():
			// The kernel dropped events (a full inotify queue): what
			// was missed is found by reading the tree again.
			a.log.Warn("watching the cgroup tree: reading it again", "error", err)
			a.report(a.full(ctx, false))
		}
	}
}

// report logs an error of a reconciliation that the agent survives: it
// keeps running, and tries again at the next event.
func (a *Agent) report(err error) {
	if err != nil {
		a.log.Error("applying policies", "error", err)
	}
}

// ready counts what is in force.
func (a *Agent) ready() Ready {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := Ready{}
	for _, f := range a.files {
		if f.good != nil {
			r.Policies++
		}
	}
	for _, st := range a.states {
		if st.state == metrics.InForce {
			r.Cgroups++
		}
	}
	return r
}

// record tells the store that this agent serves the DNS of persistent
// policies with name rules, so that 'cgwall attach' can load them for its
// resolver; or, when it stops, that it no longer does (unless another agent
// took its place meanwhile).
func (a *Agent) record(ctx context.Context, running bool) error {
	if a.cfg.DNS == nil {
		return nil
	}
	s, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if running {
		return s.SetAgent(&store.Agent{PID: os.Getpid(), Resolver: a.cfg.DNS.Addrs(), Socket: a.cfg.Socket})
	}
	if rec, ok, err := s.Agent(); err != nil || !ok || rec.PID != os.Getpid() {
		return err
	}
	return s.SetAgent(nil)
}

// openStore opens the store, waiting for its lock while a command holds it.
func (a *Agent) openStore(ctx context.Context) (*store.Store, error) {
	return store.OpenAt(ctx, a.cfg.StoreRoot, func() {
		a.log.Info("waiting for the lock on the store: a command is changing persistent policies", "store", a.cfg.StoreRoot)
	})
}
