package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/agent"
	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/metrics"
	"github.com/cgwall/cgwall/internal/store"
)

type agentFlags struct {
	policies  string
	metrics   string
	ruleLimit int
	logFormat string
	storeRoot string // hidden: tests use a store of their own
	dnsPort   int
	socket    string
	dns       dnsFlags
}

// defaultDNSPort is where the agent serves the DNS of persistent policies
// with name rules, on 127.0.0.1 and [::1]: the policies' programs are loaded
// with it, so it must stay the same across restarts. Below the ephemeral
// range, so that no outgoing socket holds it when the agent starts.
const defaultDNSPort = 5399

func newAgentCmd(stderr io.Writer) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent --policies DIR [--metrics ADDR:PORT]",
		Short: "Apply the policy files of a folder to every cgroup they target, and follow changes",
		Long: `agent applies each policy file of DIR (*.yaml: a policy file with a targets:
list) as a persistent policy to every cgroup its targets name, logs
"agent ready: N policies, M cgroups" on stderr once they all have it, and then follows
cgroups as they are made and removed and files as they change. A file that
turns bad keeps its last good policy in force. The agent replaces and removes
only the policies it attached; SIGHUP reads everything again; SIGTERM and
SIGINT end it and leave every policy in force. See docs/agent.md.`,
		Example: `  cgwall agent --policies /etc/cgwall/policies --metrics 127.0.0.1:9464`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), f, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.policies, "policies", "", "the folder of policy files (required)")
	fl.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics and /healthz on ADDR:PORT")
	fl.IntVar(&f.ruleLimit, "metrics-rule-limit", 1000, "export per-rule counters only for policies of at most this many rules")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.IntVar(&f.dnsPort, "dns-port", defaultDNSPort, "serve the DNS of policies with name rules on `PORT` of 127.0.0.1 and [::1]")
	fl.StringVar(&f.socket, "socket", agent.DefaultSocket, "answer 'cgwall list' on this unix `PATH`, in a folder only root may write to (when learned addresses expire)")
	f.dns.bind(fl)
	fl.StringVar(&f.storeRoot, "store", store.DefaultRoot, "the store's folder")
	_ = fl.MarkHidden("store")
	return cmd
}

// check refuses bad flags before anything is made.
func (f agentFlags) check() error {
	if f.policies == "" {
		return usageErr(errors.New("--policies DIR is required: the folder of policy files to apply"))
	}
	st, err := os.Stat(f.policies)
	if err != nil {
		return usageErr(fmt.Errorf("--policies %s: %w", f.policies, unwrapPath(err)))
	}
	if !st.IsDir() {
		return usageErr(fmt.Errorf("--policies %s is not a folder: give the folder that holds the policy files", f.policies))
	}
	if f.ruleLimit < 0 {
		return usageErr(fmt.Errorf("--metrics-rule-limit %d: give 0 or more", f.ruleLimit))
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return usageErr(fmt.Errorf("--log-format %q: use text or json", f.logFormat))
	}
	if f.dnsPort < 1 || f.dnsPort > 65535 {
		return usageErr(fmt.Errorf("--dns-port %d: give a port from 1 to 65535", f.dnsPort))
	}
	if !filepath.IsAbs(f.socket) {
		return usageErr(fmt.Errorf("--socket %q: give an absolute path, as %s", f.socket, agent.DefaultSocket))
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func runAgent(ctx context.Context, f agentFlags, stderr io.Writer) error {
	if err := f.check(); err != nil {
		return err
	}
	dnsSet, err := f.dns.parse()
	if err != nil {
		return err
	}
	var ln net.Listener
	if f.metrics != "" {
		var err error
		if ln, err = listenMetrics(f.metrics); err != nil {
			return err
		}
		defer ln.Close()
	}
	if err := checkPrivileges(needStore); err != nil {
		return err
	}
	if err := checkKernel(); err != nil {
		return err
	}
	mnt, err := cgroup.Mount()
	if err != nil {
		return failure(err)
	}
	log := agentLogger(f.logFormat, stderr)
	dns, err := agent.NewDNS(f.dnsPort, f.storeRoot, log)
	if err != nil {
		return failure(err)
	}
	defer dns.Close()
	api, err := agent.ListenAPI(f.socket, dns)
	if err != nil {
		return failure(err)
	}
	defer api.Close()
	if f.storeRoot == store.DefaultRoot {
		// Open makes the store's folder and mounts bpffs where it is missing.
		s, err := store.Open(ctx, nil)
		if err != nil {
			return failure(err)
		}
		s.Close()
	}
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	cfg := agent.Config{Policies: f.policies, Mount: mnt, StoreRoot: f.storeRoot, Log: log, Reload: reload, DNS: dns, Socket: f.socket}
	if ln != nil {
		cfg.Log.Info("serving metrics", "addr", ln.Addr().String())
	}
	a, err := agent.New(cfg)
	if err != nil {
		return failure(err)
	}
	if ln != nil {
		m := metrics.New(a, f.ruleLimit)
		a.SetMetrics(m)
		srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	if err := dns.Serve(dnsSet.upstream, dnsSet.minTTL, dnsSet.maxAddrs); err != nil {
		return failure(err)
	}
	err = a.Run(ctx, func(r agent.Ready) {
		cfg.Log.Info(fmt.Sprintf("agent ready: %s, %s", policies(r.Policies), plural(r.Cgroups, "cgroup")), "policies", r.Policies, "cgroups", r.Cgroups)
		notifyReady(cfg.Log)
	})
	if err != nil {
		return failure(err)
	}
	cfg.Log.Info("stopping: every policy stays in force", "signal", context.Cause(ctx))
	return nil
}

// listenMetrics listens on the metrics address first of all, so that a bad
// or busy address fails before anything is attached.
func listenMetrics(addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageErr(fmt.Errorf("--metrics %q: want ADDR:PORT, as 127.0.0.1:9464", addr))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, failure(fmt.Errorf("--metrics %s: %w", addr, err))
	}
	return ln, nil
}

func agentLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// notifyReady tells systemd that the agent is ready (Type=notify), when it
// runs under systemd.
func notifyReady(log *slog.Logger) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte("READY=1"))
		conn.Close()
	}
	if err != nil {
		log.Warn("could not tell systemd the agent is ready", "error", err)
	}
}

func policies(n int) string {
	if n == 1 {
		return "1 policy"
	}
	return fmt.Sprintf("%d policies", n)
}
