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
	var log string
	cmd := &cobra.Command{
		Use:   "watch [--cgroup PATH] [--log drop|all] [--format text|json]",
		Short: "Stream the decisions of persistent policies",
		Long: `watch prints the decisions of every persistent policy, or of one, until
SIGINT or SIGTERM. A policy streams what its own log setting asks for; --log
narrows that down. Each event says which cgroup it came from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := output.parse()
			if err != nil {
				return err
			}
			level, err := policy.ParseLogLevel(log)
			if err != nil {
				return usageErr(fmt.Errorf("--log: %w", err))
			}
			var watched []watched
			err = withStore(func(s *store.Store) error {
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
			return watch(cmd.Context(), watched, level, format, stdout, stderr)
		},
	}
	target.bind(cmd.Flags())
	output.bind(cmd.Flags())
	cmd.Flags().StringVar(&log, "log", "all", "which of the streamed decisions to print: drop or all")
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

func watch(ctx context.Context, ws []watched, level policy.LogLevel, format events.Format, stdout, stderr io.Writer) error {
	out := &lockedWriter{w: stdout}
	var streamers []*streamer
	for _, w := range ws {
		rd, err := w.d.Events()
		if err != nil {
			return failure(err)
		}
		defer rd.Close()
		s := newStreamer(w.d, rd, format, out, stderr)
		s.filter, s.cgroup, s.refresh = level, w.path, true
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
