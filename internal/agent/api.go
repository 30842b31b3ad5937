package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cgwall/cgwall/internal/resolver"
)

// DefaultSocket is where the agent answers what only it knows: when the
// addresses its resolver learned expire, which 'cgwall list' shows. The
// maps say which addresses are in force; their expiry lives in the
// resolver's memory alone, as Cilium's agent keeps its FQDN cache.
const DefaultSocket = "/run/cgwall/agent.sock"

// API is the agent's unix socket, which only root may reach.
type API struct{ srv *http.Server }

// ListenAPI listens on path for what dns holds. It refuses a path where an
// agent answers already, and a folder that others than root may write to;
// it takes the place of a socket that no agent answers on (one that was
// killed).
func ListenAPI(path string, dns *DNS) (*API, error) {
	if err := apiFolder(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/learned", func(w http.ResponseWriter, r *http.Request) { serveHeld(w, r, dns) })
	a := &API{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go a.srv.Serve(ln)
	return a, nil
}

// Close stops answering and removes the socket (the listener removes its
// file when it closes).
func (a *API) Close() error { return a.srv.Close() }

// apiFolder makes the socket's folder, root's alone, or checks that it is
// (a folder others may write to could hold someone else's socket).
func apiFolder(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make %s for the agent's socket: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	uid := -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		uid = int(sys.Uid)
	}
	switch {
	case !st.IsDir():
		return fmt.Errorf("%s, the folder of the agent's socket, is not a folder", dir)
	case uid != 0 || st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s, the folder of the agent's socket, is not root's alone (owner uid %d, mode %v): give --socket in a folder only root may write to", dir, uid, st.Mode().Perm())
	}
	return nil
}

// clearStale removes a socket at path on which no agent answers.
func clearStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it or give another --socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another agent answers on %s: stop it first", path)
	}
	return os.Remove(path)
}

func serveHeld(w http.ResponseWriter, r *http.Request, dns *DNS) {
	id, err := strconv.ParseUint(r.URL.Query().Get("cgroup"), 10, 64)
	if err != nil {
		http.Error(w, "give ?cgroup=ID", http.StatusBadRequest)
		return
	}
	held, ok := dns.Held(id)
	if !ok {
		http.Error(w, "the agent serves no DNS for that cgroup", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(held)
}

// ErrNoAgent is the error of AskHeld when no agent answers.
var ErrNoAgent = errors.New("no agent answers")

// AskHeld asks the agent on socket what it holds of a cgroup's learned
// addresses. It fails with ErrNoAgent when none answers there, and with
// an error that wraps fs.ErrNotExist when the agent does not serve the
// cgroup's DNS.
func AskHeld(ctx context.Context, socket string, id uint64) ([]resolver.Held, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/learned?cgroup="+strconv.FormatUint(id, 10), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %v", ErrNoAgent, socket, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("the agent on %s serves no DNS for cgroup %d: %w", socket, id, fs.ErrNotExist)
	default:
		return nil, fmt.Errorf("the agent on %s: %s", socket, resp.Status)
	}
	var out []resolver.Held
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("the agent on %s: %w", socket, err)
	}
	return out, nil
}
