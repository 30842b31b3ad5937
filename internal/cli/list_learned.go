package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cgwall/cgwall/internal/agent"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/resolver"
	"github.com/cgwall/cgwall/internal/store"
)

// learnedView is one address that DNS answers put in force for a name
// pattern of the policy.
type learnedView struct {
	Pattern string     `json:"pattern"`
	Addr    netip.Addr `json:"addr"`
	// Expires is when the agent takes it out of force unless an answer
	// holds it longer; null when no agent says (ExpiryUnknown says why).
	Expires *time.Time `json:"expires"`
	// Names are the asked names whose answers hold it.
	Names []string `json:"names,omitempty"`
}

// viewLearned adds to v the addresses that DNS answers put in force for the
// policy's name rules, and when each expires, which the agent alone knows.
func viewLearned(ctx context.Context, s *store.Store, d *datapath.Datapath, v *policyView) error {
	if !d.Policy().HasNames() {
		return nil
	}
	learned, err := d.Learned()
	if err != nil {
		return err
	}
	held, why := askAgent(ctx, s, v.ID)
	v.ExpiryUnknown = why
	views := []learnedView{}
	for _, l := range learned {
		lv := learnedView{Pattern: l.Pattern, Addr: l.Addr}
		if h, ok := held[l.Addr]; ok && !h.Expires.IsZero() {
			lv.Expires, lv.Names = &h.Expires, h.Names
		}
		views = append(views, lv)
	}
	slices.SortFunc(views, func(a, b learnedView) int {
		return cmp.Or(strings.Compare(a.Pattern, b.Pattern), a.Addr.Compare(b.Addr))
	})
	v.Learned = &views
	return nil
}

// askAgent returns what the agent holds of a cgroup's learned addresses, or
// why it cannot say.
func askAgent(ctx context.Context, s *store.Store, id uint64) (map[netip.Addr]resolver.Held, string) {
	rec, ok, err := s.Agent()
	switch {
	case err != nil:
		return nil, err.Error()
	case !ok || rec.Socket == "":
		return nil, "no agent has recorded where it answers: the addresses stay in force until an agent runs and lets them expire"
	}
	held, err := agent.AskHeld(ctx, rec.Socket, id)
	switch {
	case errors.Is(err, agent.ErrNoAgent):
		return nil, fmt.Sprintf("no agent answers on %s: the addresses stay in force until one runs and lets them expire", rec.Socket)
	case errors.Is(err, fs.ErrNotExist):
		return nil, "the agent does not serve this policy's DNS (it was loaded for another resolver): its addresses stay in force, and none is learned or expires"
	case err != nil:
		return nil, err.Error()
	}
	out := make(map[netip.Addr]resolver.Held, len(held))
	for _, h := range held {
		out[h.Addr] = h
	}
	return out, ""
}

func printLearned(w io.Writer, v policyView, now time.Time) {
	if v.Learned == nil {
		return
	}
	if len(*v.Learned) == 0 {
		fmt.Fprintln(w, "  learned from DNS answers: none")
		return
	}
	fmt.Fprintln(w, "  learned from DNS answers:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    PATTERN\tADDRESS\tEXPIRES")
	for _, l := range *v.Learned {
		fmt.Fprintf(tw, "    %s\t%s\t%s\n", l.Pattern, l.Addr, expiry(l.Expires, now))
	}
	tw.Flush()
	if v.ExpiryUnknown != "" {
		fmt.Fprintf(w, "    expiry unknown: %s\n", v.ExpiryUnknown)
	}
}

// expiry says when an address expires, in the time left and the UTC time.
func expiry(t *time.Time, now time.Time) string {
	switch {
	case t == nil:
		return "unknown"
	case !t.After(now):
		return "now (" + t.UTC().Format(time.RFC3339) + ")"
	}
	return fmt.Sprintf("in %v (%s)", t.Sub(now).Round(time.Second), t.UTC().Format(time.RFC3339))
}
