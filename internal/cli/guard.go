package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
)

// The guard is what keeps exec's promise when exec is killed: that nothing the
// command does escapes the filter. It is cgwall itself, run again as
// "cgwall exec __guard CGROUP EXEC-PID". It holds copies of the filter's
// links, so the programs stay attached for as long as it lives, and the read
// end of a pipe whose only write end is exec's. The pipe reaches EOF when exec
// exits, however it ends; if the command's cgroup is still there then, the
// guard kills what is in it, waits until the last process is gone, removes the
// cgroup and only then exits, dropping the links. There is no moment when a
// process of the command runs and no link holds the filter.
//
// It runs in its own session and in the root of the cgroup2 mount, so that
// neither a signal to exec's process group or session (Ctrl-C, a closed
// terminal, kill -9 -PGID) nor the end of exec's own cgroup (systemctl stop, a
// session's end) reaches it together with exec.
const guardName = "__guard"

// Descriptors the guard is started with: after stdin, stdout and stderr, the
// pipe, then the links.
const guardPipeFD = 3

// guardProc is a running guard, as exec sees it.
type guardProc struct {
	cmd  *exec.Cmd
	pipe *os.File   // the write end; closed, it tells the guard exec is done
	died chan error // gets the guard's end, should it end first
}

// startGuard starts the guard of the command's cgroup cg, giving it the
// links of att. When it returns without error, the guard holds them: they
// were copied into it when it was forked.
func startGuard(cg cgroup.Dir, att *datapath.Attachment, stderr io.Writer) (*guardProc, error) {
	fds, err := att.LinkFDs()
	if err != nil {
		return nil, fmt.Errorf("start the exec guard: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start the exec guard: %w", err)
	}
	defer r.Close()
	files := []*os.File{r}
	for _, fd := range fds {
		// A copy, so that the *os.File may close it without closing the link.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			w.Close()
			closeAll(files[1:])
			return nil, fmt.Errorf("start the exec guard: copy a link: %w", err)
		}
		files = append(files, os.NewFile(uintptr(dup), "link"))
	}
	defer closeAll(files[1:])
	root, err := cgroupRootFD()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start the exec guard: %w", err)
	}
	defer syscall.Close(root)

	c := &exec.Cmd{
		Path:       "/proc/self/exe", // this binary, even if its file has been replaced since
		Args:       []string{"cgwall", "exec", guardName, cg.Path, strconv.Itoa(os.Getpid())},
		Dir:        "/", // so as to keep no directory busy
		Stderr:     stderrFile(stderr),
		ExtraFiles: files,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:      true,
			UseCgroupFD: true,
			CgroupFD:    root,
		},
	}
	if err := c.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start the exec guard: %w", err)
	}
	g := &guardProc{cmd: c, pipe: w, died: make(chan error, 1)}
	go func() { g.died <- c.Wait() }()
	return g, nil
}

// release tells the guard that exec is done: it has removed the cgroup, or
// warned that it could not, and the guard finishes the job.
func (g *guardProc) release() { g.pipe.Close() }

// cgroupRootFD opens the root of the cgroup2 mount, for the guard to be
// cloned into.
func cgroupRootFD() (int, error) {
	mnt, err := cgroup.Mount()
	if err != nil {
		return -1, err
	}
	fd, err := syscall.Open(mnt, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open cgroup %s: %w", mnt, err)
	}
	return fd, nil
}

// stderrFile is the file the guard writes its warnings to: exec's stderr
// where that is a file, as it is in the binary.
func stderrFile(w io.Writer) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return os.Stderr
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// newGuardCmd is the guard's side: a hidden subcommand of exec.
func newGuardCmd(stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    guardName + " CGROUP EXEC-PID",
		Short:  "exec's helper, which holds the filter until the command is gone (internal)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			return guard(args[0], args[1], os.NewFile(guardPipeFD, "exec"), stderr)
		},
	}
}

// checkGuarded refuses to guard anything but what exec starts a guard for:
// the transient cgroup of a cgwall exec, with a pipe from it. Run by hand on
// another cgroup, the guard would kill every process in it.
func checkGuarded(path, execPID string, pipe *os.File) error {
	mnt, err := cgroup.Mount()
	if err != nil {
		return err
	}
	if filepath.Dir(path) != mnt || !strings.HasPrefix(filepath.Base(path), "cgwall-exec-"+execPID+"-") {
		return fmt.Errorf("%s guards only the cgroup that cgwall exec (pid %s) made for its command, %s/cgwall-exec-%s-*, not %s: it is started by exec, not by hand", guardName, execPID, mnt, execPID, path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(pipe.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s needs a pipe from cgwall exec as descriptor %d: it is started by exec, not by hand", guardName, guardPipeFD)
	}
	return nil
}

// guardRetry paces the guard's attempts to empty a cgroup whose processes
// outlive SIGKILL (stuck in the kernel) beyond cgroup.Remove's own wait: it
// holds the filter for as long as that takes.
const guardRetry = time.Second

// guard waits for exec to end, then removes the command's cgroup if exec has
// not, holding the filter's links (inherited, never closed) until no process
// is left in it.
func guard(path, execPID string, pipe *os.File, stderr io.Writer) error {
	if err := checkGuarded(path, execPID, pipe); err != nil {
		return failure(err)
	}
	// Signals meant for exec or its command are not the guard's: only the
	// pipe ends it.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGTTOU, syscall.SIGTTIN)
	io.Copy(io.Discard, pipe) // EOF: exec is gone, or done
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil // exec removed it: the normal end
	}
	fmt.Fprintf(stderr, "cgwall: cgwall exec (pid %s) ended and left its command's cgroup %s: killing what is in it, under the filter until it is gone\n", execPID, path)
	warned := false
	for {
		err := cgroup.Remove(path)
		if err == nil {
			return nil
		}
		if cgroup.WaitEmpty(path, 0) == nil {
			// No process is left to filter: the links may go.
			return failure(err)
		}
		if !warned {
			fmt.Fprintf(stderr, "cgwall: %v; holding the filter and trying again every %v\n", err, guardRetry)
			warned = true
		}
		time.Sleep(guardRetry)
	}
}
