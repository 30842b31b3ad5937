package cli

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestChoiceWords holds each choice's words equal to what its parse function
// takes: each word parses, and the error for any other names every word.
func TestChoiceWords(t *testing.T) {
	for name, c := range map[string]wordsValue{
		"action": actionFlag(0),
		"log":    logFlag(0),
		"format": formatFlag(),
		"show":   showFlag(),
	} {
		t.Run(name, func(t *testing.T) {
			for _, w := range c.Words() {
				if err := c.Set(w); err != nil || c.String() != w {
					t.Errorf("Set(%q) = %v, then String() = %q", w, err, c.String())
				}
			}
			err := c.Set("bogus")
			if err == nil {
				t.Fatal(`Set("bogus") took it`)
			}
			for _, w := range c.Words() {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestAliases checks that the old names of flags set what the new ones do.
func TestAliases(t *testing.T) {
	for _, tc := range []struct {
		cmd  *cobra.Command
		args []string
		flag string
		want string
	}{
		{newListCmd(io.Discard), []string{"--format", "json"}, "format", "json"},
		{newListCmd(io.Discard), []string{"-o", "json"}, "format", "json"},
		{newListCmd(io.Discard), []string{"--output", "json"}, "format", "json"},
		{newListCmd(io.Discard), []string{"--output=json", "--format", "text"}, "format", "text"},
		{newWatchCmd(io.Discard, io.Discard), []string{"--show", "drop"}, "show", "drop"},
		{newWatchCmd(io.Discard, io.Discard), []string{"--log", "drop"}, "show", "drop"},
		{newWatchCmd(io.Discard, io.Discard), []string{}, "show", "all"},
	} {
		t.Run(strings.Join(append([]string{tc.cmd.Name()}, tc.args...), " "), func(t *testing.T) {
			if err := tc.cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			if got := tc.cmd.Flags().Lookup(tc.flag).Value.String(); got != tc.want {
				t.Errorf("--%s = %q, want %q", tc.flag, got, tc.want)
			}
		})
	}
}
