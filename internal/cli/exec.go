package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
)

// forwarded are the signals exec passes on to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func newExecCmd(prep **datapath.Prepared, stderr io.Writer) *cobra.Command {
	var rules ruleFlags
	var output outputFlags
	cmd := &cobra.Command{
		Use:   "exec [rule flags | -f FILE] -- CMD [ARG...]",
		Short: "Run a command in a fresh cgroup under a policy",
		Long: `exec creates a transient cgroup, attaches the policy to it and starts CMD
inside it from its first instruction (cloned into the cgroup). Decisions go to
stderr. Signals are forwarded to CMD; exec exits with CMD's status, or 128+N if
signal N ended it, and removes the cgroup and everything attached to it.`,
		Args:        cobra.MinimumNArgs(1),
		Annotations: map[string]string{preparesObject: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return usageErr(errors.New("put the command after --: cgwall exec [flags] -- CMD [ARG...]"))
			}
			p, err := rules.policy(cmd.Context())
			if err != nil {
				return err
			}
			format, err := output.parse()
			if err != nil {
				return err
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return usageErr(fmt.Errorf("command %s: %w", args[0], err))
			}
			if err := checkPrivileges(); err != nil {
				return err
			}
			// Signals are the command's from here on; exec only relays them.
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, forwarded...)
			defer signal.Stop(sigs)

			cg, err := transientCgroup()
			if err != nil {
				return failure(err)
			}
			f, err := attachForeground(*prep, p, cg, stderr)
			if err != nil {
				removeCgroup(cg.Path, stderr)
				return err
			}
			// Deferred calls run last first: whatever the command left
			// running is killed while the filter still holds it.
			defer f.Close()
			defer removeCgroup(cg.Path, stderr)
			return runInCgroup(cg, path, args, sigs, newStreamer(f.d, f.rd, format, stderr, stderr))
		},
	}
	rules.bind(cmd.Flags())
	output.bind(cmd.Flags())
	return cmd
}

// transientCgroup creates an empty cgroup for one command, at the top of the
// cgroup2 hierarchy, where cgwall as root may always create one.
func transientCgroup() (cgroup.Dir, error) {
	mnt, err := cgroup.Mount()
	if err != nil {
		return cgroup.Dir{}, err
	}
	path, err := os.MkdirTemp(mnt, fmt.Sprintf("cgwall-exec-%d-", os.Getpid()))
	if err != nil {
		return cgroup.Dir{}, fmt.Errorf("create a cgroup for the command: %w", err)
	}
	return cgroup.Resolve(path)
}

// removeCgroup kills whatever the command left running in the cgroup, then
// removes it; a cgroup left behind is worth a warning, not a failure of the
// command, whose status is what exec reports.
func removeCgroup(path string, stderr io.Writer) {
	if err := cgroup.Remove(path); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
}

// runInCgroup starts the command cloned into the cgroup, streams decisions
// while it runs, relays signals and returns its exit status as an exitError.
func runInCgroup(cg cgroup.Dir, path string, args []string, sigs chan os.Signal, s *streamer) error {
	fd, err := syscall.Open(cg.Path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return failure(err)
	}
	c := exec.Command(path, args[1:]...)
	c.Args[0] = args[0]
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	err = c.Start()
	syscall.Close(fd)
	if err != nil {
		return failure(fmt.Errorf("start %s: %w", args[0], err))
	}

	streamCtx, stopStream := context.WithCancel(context.Background())
	streamDone := make(chan error, 1)
	go func() { streamDone <- s.stream(streamCtx, func() error { return nil }) }()
	waitDone := make(chan error, 1)
	go func() { waitDone <- c.Wait() }()

	for {
		select {
		case sig := <-sigs:
			c.Process.Signal(sig)
		case <-waitDone:
			stopStream()
			<-streamDone
			return exitStatus(c.ProcessState)
		}
	}
}

// exitStatus turns the command's end into cgwall's: its code, or 128+signal.
func exitStatus(ps *os.ProcessState) error {
	ws := ps.Sys().(syscall.WaitStatus)
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if code == 0 {
		return nil
	}
	return &exitError{code: code, err: errSilent}
}

// errSilent marks an exit code that needs no message: the command's own.
var errSilent = errors.New("")
