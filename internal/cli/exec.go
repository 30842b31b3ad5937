package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
)

// forwarded are the signals exec passes on to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// exec's exit codes for its own ends, as env, timeout and docker run have
// them. The command's own status passes through as it is, so these are the
// only codes cgwall adds; bad flags and input included, since exit 1 or 2
// could be the command's.
const (
	exitExecFailed = 125 // cgwall's own error
	exitCannotRun  = 126 // CMD was found but cannot be run
	exitNotFound   = 127 // CMD was not found
)

const execLong = `exec creates a transient cgroup, attaches the policy to it and starts CMD
inside it from its first instruction (cloned into the cgroup), in a new cgroup
namespace rooted at that cgroup. Decisions go to stderr. Signals are forwarded
to CMD; when it ends, exec kills whatever it left running and removes the
cgroup and everything attached to it.

If exec itself is killed, even with SIGKILL, its guard (a second cgwall
process, outside the cgroup, which holds the filter) kills every process left
in the cgroup, waits until the last is gone and only then lets the filter go:
no process of CMD runs on unfiltered.

Where cgroup2 is mounted with nsdelegate (systemd's default), the namespace
stops CMD, even as root, from moving itself out of its cgroup; without it, a
root CMD can. See docs/security.md for what cgwall stops and what it cannot.

With --learn FILE, exec drops nothing (the policy runs in audit mode), sends
the command's DNS through cgwall's resolver, and when the command ends writes
FILE: a policy with egress default block that allows what the command sent
and nothing more. A destination reached through a name becomes a name rule
(api.example.com:tcp/443), one reached without DNS an address rule
(192.0.2.10/32:udp/5000), each with the protocol and port used and a comment
with what was seen; the DNS itself becomes no rule. The rules of the policy
given stay in FILE. --learn-merge adds to an existing FILE instead, which is
then the policy the command runs under; --learn-wildcards N folds N names or
more under a parent into *.parent. exec still exits with the command's status,
and writes FILE whatever it is.

` + rulesHelp + `

Exit status:
  CMD's own status, or 128+N if signal N ended it
  125  cgwall's own error: a bad flag, rule or file, a missing privilege, the
       kernel (the message names it)
  126  CMD was found but cannot be run: not executable, a directory, not a
       format the kernel runs
  127  CMD, or the interpreter its #! line names, was not found`

func newExecCmd(prep **datapath.Prepared, stderr io.Writer) *cobra.Command {
	var rules ruleFlags
	var dns dnsFlags
	var output outputFlags
	var learnf learnFlags
	cmd := &cobra.Command{
		Use:   "exec [flags] -- CMD [ARG...]",
		Short: "Run a command in a fresh cgroup under a policy",
		Long:  execLong,
		Example: `  cgwall exec --block 192.0.2.1 -- curl http://192.0.2.1/
  cgwall exec --default block --allow 192.0.2.10:tcp/443 --allow any:udp/53 --log all -- ./client
  cgwall exec -f policy.yaml -- sh -c 'make test'
  cgwall exec --learn policy.yaml -- make test && cgwall exec -f policy.yaml -- make test`,
		Args: func(cmd *cobra.Command, args []string) error {
			return execExit(cobra.MinimumNArgs(1)(cmd, args))
		},
		Annotations: map[string]string{preparesObject: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return execExit(usageErr(errors.New("put the command after --: cgwall exec [flags] -- CMD [ARG...]")))
			}
			return execExit(runExec(cmd.Context(), *prep, &rules, &dns, &output, &learnf, args, stderr))
		},
	}
	rules.bind(cmd.Flags())
	dns.bind(cmd.Flags())
	output.bind(cmd.Flags())
	learnf.bind(cmd.Flags())
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return execExit(flagError(c, err)) })
	cmd.AddCommand(newGuardCmd(stderr))
	return cmd
}

// execExit gives each of exec's own errors the code 125, and leaves the
// command's codes as they are: its status, and 126 or 127 for one that could
// not start.
func execExit(err error) error {
	if err == nil || errors.Is(err, errSilent) {
		return err
	}
	var ee *exitError
	if errors.As(err, &ee) && (ee.code == exitCannotRun || ee.code == exitNotFound) {
		return err
	}
	return &exitError{code: exitExecFailed, err: err}
}

func runExec(ctx context.Context, prep *datapath.Prepared, rules *ruleFlags, dnsf *dnsFlags, output *outputFlags, learnf *learnFlags, args []string, stderr io.Writer) error {
	lrn, err := learnf.prepare(rules)
	if err != nil {
		return err
	}
	p, err := rules.policy(ctx)
	if err != nil {
		return err
	}
	format, err := output.parse()
	if err != nil {
		return err
	}
	dns, err := dnsf.parse()
	if err != nil {
		return err
	}
	path, err := lookCommand(args[0])
	if err != nil {
		return err
	}
	if err := checkPrivileges(needCgroupMount); err != nil {
		return err
	}
	if lrn != nil {
		if err := lrn.start(p); err != nil {
			return err
		}
		defer lrn.discard()
		// Nothing is dropped while learning.
		p.Audit = true
	}
	warnUnusedDNS(p, dns, lrn != nil, stderr)
	// Signals are the command's from here on; exec only relays them.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	cg, err := transientCgroup()
	if err != nil {
		return failure(err)
	}
	f, err := attachForeground(prep, p, cg, dns, lrn, stderr)
	if err != nil {
		removeCgroup(cg.Path, stderr)
		return err
	}
	defer f.Close()
	g, err := startGuard(cg, f.att, stderr)
	if err != nil {
		removeCgroup(cg.Path, stderr)
		return failure(err)
	}
	// Deferred calls run last first: whatever the command left running is
	// killed while the filter still holds it; then the guard learns that
	// exec is done, and finds nothing left to do.
	defer g.release()
	defer removeCgroup(cg.Path, stderr)
	err = runInCgroup(cg, path, args, sigs, g, f.newStreamer(format, stderr, stderr))
	if lrn == nil || !commandRan(err) {
		return err
	}
	// A command that failed still did what it did: FILE says it, and exec
	// exits with the command's status, unless FILE could not be written.
	if lerr := lrn.finish(f.d, stderr); lerr != nil {
		return lerr
	}
	return err
}

// commandRan says whether runInCgroup's result is the command's own end
// (its status), rather than a failure to start or run it.
func commandRan(err error) bool {
	var ee *exitError
	return err == nil || errors.As(err, &ee) && ee.err == errSilent
}

// lookCommand finds CMD as a shell would. Not found is exit 127; found but
// not runnable (not executable, a directory) is 126. Both are known before
// anything is made.
func lookCommand(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	code := exitCannotRun
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		code = exitNotFound
	}
	return "", &exitError{code: code, err: fmt.Errorf("command %s: %w", name, err)}
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
func runInCgroup(cg cgroup.Dir, path string, args []string, sigs chan os.Signal, g *guardProc, s *streamer) error {
	fd, err := syscall.Open(cg.Path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return failure(err)
	}
	c := exec.Command(path, args[1:]...)
	c.Args[0] = args[0]
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	// clone3 puts the child in the cgroup; unshare, in the child before it
	// runs CMD, then roots the new namespace at that cgroup, whichever cgroup
	// a kernel's clone3 would have rooted it at.
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Unshareflags: syscall.CLONE_NEWCGROUP}
	err = startCommand(c, s.d, s.stderr)
	syscall.Close(fd)
	if err != nil {
		return startError(args[0], path, err)
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
		case err := <-g.died:
			// Without its guard, exec killed would leave the command
			// unfiltered: it does not run on (the deferred removal kills it).
			stopStream()
			<-streamDone
			return failure(fmt.Errorf("the exec guard (pid %d) ended (%v) while %s ran: stopping %s, which must not outlive its filter", g.cmd.Process.Pid, err, args[0], args[0]))
		}
	}
}

// startError says why the command did not start, with the code that tells
// whether it was not found (127: the file is gone since, or its interpreter
// is missing), found but not runnable (126), or stopped by cgwall (125).
func startError(name, path string, err error) error {
	code := exitExecFailed
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT:
			code = exitNotFound
			if interp := interpreter(path); interp != "" {
				err = fmt.Errorf("its interpreter %s was not found", interp)
			}
		case syscall.EACCES, syscall.ENOEXEC, syscall.ETXTBSY, syscall.ELOOP, syscall.EISDIR, syscall.ENOTDIR, syscall.ENAMETOOLONG:
			code = exitCannotRun
		}
	}
	return &exitError{code: code, err: fmt.Errorf("start %s: %w", name, err)}
}

// interpreter returns the program that a script's #! line names, if it has one.
func interpreter(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line := make([]byte, 256) // the kernel reads no more than this of a #! line
	n, _ := io.ReadFull(f, line)
	first, _, _ := strings.Cut(string(line[:n]), "\n")
	rest, ok := strings.CutPrefix(first, "#!")
	if !ok {
		return ""
	}
	if fields := strings.Fields(rest); len(fields) > 0 {
		return fields[0]
	}
	return ""
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
