package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

func newWatchCmd(stdout, stderr io.Writer) *cobra.Command {
	var target targetFlags
	var output outputFlags
	var process processFilter
	var learnf learnFlags
	show := showFlag()
	cmd := &cobra.Command{
		Use:   "watch [--cgroup PATH] [--show drop|all] [--format text|json]",
		Short: "Stream the decisions of persistent policies",
		Long: `watch prints the decisions of every persistent policy, or of one, until
SIGINT or SIGTERM. A policy streams what its own log setting asks for (attach
--log); --show narrows down what watch prints of that. Each event says which
cgroup it came from, and when it was decided (time=, RFC 3339 in UTC).

watch prints only what is decided after it starts: the events that waited in
a policy's ring buffer for a reader (up to some 3,600, perhaps minutes old and
from a policy since replaced) are skipped, and stderr says how many.

With --learn FILE and one cgroup, watch also puts beside its policy programs
that drop nothing and record where the cgroup sends and the DNS answers it
gets over UDP; on SIGINT or SIGTERM it writes FILE as exec --learn does, the
policy's rules included. The policy in force decides as before meanwhile.

--log is the old name of --show: it still works, but is deprecated, because on
watch it never changed the policy's log setting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("log") {
				fmt.Fprintln(stderr, "warning: watch --log is deprecated: use --show, the same filter (--log on attach and run sets what a policy logs)")
			}
			format, err := output.parse()
			if err != nil {
				return err
			}
			lrn, err := learnf.prepare(nil)
			if err != nil {
				return err
			}
			if lrn != nil && len(target.given()) == 0 {
				return usageErr(errors.New("--learn: name the cgroup to learn from: --cgroup PATH, --pid, --unit or --container"))
			}
			var watched []watched
			err = withStore(cmd, func(s *store.Store) error {
				ids, err := selectIDs(s, &target, "watch")
				if err != nil {
					return err
				}
				if len(ids) == 0 {
					return usageErr(errors.New("no persistent policies to watch: attach one with 'cgwall attach'"))
				}
				watched, err = openWatched(s, ids)
				return err
			})
			if err != nil {
				return err
			}
			defer closeWatched(watched)
			if lrn == nil {
				return watch(cmd.Context(), watched, show.val, process, format, stdout, stderr)
			}
			return watchLearning(watched[0], lrn, func() error {
				return watch(cmd.Context(), watched, show.val, process, format, stdout, stderr)
			}, stderr)
		},
	}
	fs := cmd.Flags()
	target.bind(cmd)
	output.bind(fs)
	process.bind(fs)
	learnf.bind(fs)
	fs.Var(show, "show", "which of the streamed decisions to print (--log is a deprecated alias)")
	// The deprecated name, hidden from --help but for the note above. Not
	// MarkDeprecated: cobra would print its warning to stdout, into the events.
	fs.Var(show, "log", "deprecated: use --show")
	fs.MarkHidden("log")
	return cmd
}

// watched is one persistent policy being watched. The store's lock is not
// held while watching: edits go on, and the streamer reads them back.
type watched struct {
	id   uint64
	path string
	d    *datapath.Datapath
}

func openWatched(s *store.Store, ids []uint64) ([]watched, error) {
	paths, err := cgroup.PathsByID(ids)
	if err != nil {
		return nil, failure(err)
	}
	var out []watched
	for _, id := range ids {
		d, err := s.Open(id)
		if err != nil {
			closeWatched(out)
			return nil, failure(fmt.Errorf("cgroup %d: %w", id, err))
		}
		out = append(out, watched{id, paths[id], d})
	}
	return out, nil
}

func closeWatched(ws []watched) {
	for _, w := range ws {
		w.d.Close()
	}
}

func watch(ctx context.Context, ws []watched, level policy.LogLevel, process processFilter, format events.Format, stdout, stderr io.Writer) error {
	out := &lockedWriter{w: stdout}
	var streamers []*streamer
	for _, w := range ws {
		rd, err := w.d.Events()
		if err != nil {
			return failure(err)
		}
		defer rd.Close()
		if err := rd.SkipOlder(); err != nil {
			return failure(err)
		}
		s := newStreamer(w.d, rd, format, out, stderr)
		s.filter, s.process, s.cgroup, s.refresh = level, process, w.path, true
		if s.lost, err = w.d.EventsLost(); err != nil { // report only what is lost from now on
			return failure(err)
		}
		if p := w.d.Policy(); p.Log < level {
			fmt.Fprintf(stderr, "note: the policy on %s logs %s; attach it with --log %s to see more\n", w.path, p.Log, level)
		}
		streamers = append(streamers, s)
	}
	if len(streamers) == 1 {
		fmt.Fprintf(stderr, "watching the policy on %s\n", ws[0].path)
	} else {
		fmt.Fprintf(stderr, "watching %d policies\n", len(streamers))
	}

	var wg sync.WaitGroup
	errs := make([]error, len(streamers))
	for i, s := range streamers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.stream(ctx, func() error { return nil })
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return failure(err)
	}
	return nil
}

// watchLearning runs watch with an observer beside w's policy, then writes
// what it learned.
func watchLearning(w watched, lrn *learning, watch func() error, stderr io.Writer) error {
	cg, err := cgroup.Resolve(w.path)
	if err != nil {
		return failure(err)
	}
	if err := lrn.start(w.d.Policy()); err != nil {
		return err
	}
	defer lrn.discard()
	obs, err := observe(cg, lrn)
	if err != nil {
		return err
	}
	defer obs.Close()
	fmt.Fprintf(stderr, "learning what %s does into %s until interrupted\n", w.path, lrn.path)
	if err := watch(); err != nil {
		return err
	}
	if err := obs.stop(); err != nil {
		return failure(err)
	}
	return lrn.finish(obs.d, stderr)
}

// lockedWriter lets several streamers share one output, a line at a time.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
