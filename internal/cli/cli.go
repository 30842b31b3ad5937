// Package cli is cgwall's command line: flags, commands and exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/datapath"
)

// Exit codes. Bad input (a flag, an address, a path) exits 2 with nothing
// changed; a failure of the system (privileges, kernel) exits 1.
const (
	exitFailure = 1
	exitUsage   = 2
)

// exitError carries the exit code an error should end cgwall with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as bad input.
func usageErr(err error) error { return &exitError{exitUsage, err} }

// failure marks err as a failure of the system, not of the input.
func failure(err error) error { return &exitError{exitFailure, err} }

// Main runs cgwall with args and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var prep *datapath.Prepared
	root := newRoot(&prep, stdout, stderr)
	// run and exec load the BPF object whatever their flags: it parses while
	// cobra parses the flags, and is dropped if they are wrong.
	if cmd, _, err := root.Find(args); err == nil && cmd.Annotations[preparesObject] != "" {
		prep = datapath.Prepare()
	}
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if !errors.Is(err, errSilent) {
		fmt.Fprintf(stderr, "cgwall: %v\n", err)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// Everything cobra itself rejects (flags, arguments, commands) is bad input.
	return exitUsage
}

// preparesObject annotates the commands that load a foreground filter, for
// which Main parses the BPF object ahead.
const preparesObject = "prepares-object"

// newRoot builds the commands. Those that load a foreground filter take the
// object that *prep holds when they run.
func newRoot(prep **datapath.Prepared, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "cgwall",
		Short: "A per-cgroup network firewall built on eBPF",
		Long: `cgwall attaches eBPF programs to a cgroup v2 and decides, for every packet that
a process in it (or in any cgroup below it) sends, whether it may pass, from
rules kept in BPF maps.`,
		Version:       version(),
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetVersionTemplate("cgwall {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(flagError) // every flag error is bad input
	root.AddCommand(
		newRunCmd(prep, stdout, stderr), newCheckCmd(stdout, stderr), newExecCmd(prep, stderr),
		newAttachCmd(stdout, stderr), newDetachCmd(stdout),
		newEditCmd("block", stdout), newEditCmd("allow", stdout), newEditCmd("remove", stdout),
		newListCmd(stdout), newWatchCmd(stdout, stderr), newGCCmd(stdout), newAgentCmd(stderr),
	)
	completeWords(root)
	return root
}
