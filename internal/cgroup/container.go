package cgroup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// RuntimeSockets are the API sockets that container names are looked up on,
// in order: docker's and podman's. Both serve the same HTTP API, in which
// GET /containers/NAME/json describes a container.
var RuntimeSockets = []string{"/run/docker.sock", "/run/podman/podman.sock"}

// apiTimeout bounds one question to a runtime: a socket that a hung daemon
// still holds open must not hang cgwall. Tests shorten it.
var apiTimeout = 5 * time.Second

// containerRE takes the 64-hex container ID out of the cgroup folder names
// that docker, containerd, CRI-O and podman create: docker-ID.scope,
// cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope, or a bare ID.
// The runtimes are named: CRI-O and podman also make crio-conmon-ID.scope
// and libpod-conmon-ID.scope for the monitor process beside a container,
// which is not the container.
var containerRE = regexp.MustCompile(`^(?:(?:docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$`)

// ContainerID returns the container ID that a cgroup folder is named for
// (docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope,
// or a bare ID, as docker's cgroupfs driver makes under docker/), and whether
// it is one.
func ContainerID(name string) (string, bool) {
	m := containerRE.FindStringSubmatch(name)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// nameRE is what docker and podman accept as a container name.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// OfContainer returns the cgroup of a container named by its name, its ID or
// a unique prefix of its ID, in either case. Names are asked of the runtimes'
// API sockets; IDs are found in the names of the cgroups that runtimes make,
// which covers containerd and CRI-O, which have no such socket, as well.
func OfContainer(ctx context.Context, arg string) (Dir, error) {
	return ofContainer(ctx, arg, RuntimeSockets)
}

func ofContainer(ctx context.Context, arg string, sockets []string) (Dir, error) {
	prefix := strings.ToLower(arg)
	isID := prefix != "" && len(prefix) <= 64 && strings.Trim(prefix, "0123456789abcdef") == ""
	if !isID && !nameRE.MatchString(arg) {
		return Dir{}, fmt.Errorf("%q is not a container name or ID: give its name, its ID or a unique prefix of the ID", arg)
	}
	// The name first, as docker and podman resolve it: a container named
	// "cafe" is that one, whatever other IDs start with cafe.
	named, answers, err := askByName(ctx, arg, sockets)
	if err != nil {
		return Dir{}, err
	}
	if named != nil {
		return named.cgroup(arg)
	}
	if isID {
		found, err := cgroupsOfID(prefix)
		if err != nil {
			return Dir{}, err
		}
		switch len(found) {
		case 1:
			return Resolve(found[0])
		case 0:
		default:
			return Dir{}, ambiguousID(arg, found)
		}
	}
	return Dir{}, notFound(arg, isID, answers)
}

// runtimeContainer is what a runtime says about a container: the fields of
// GET /containers/NAME/json that cgwall reads.
type runtimeContainer struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"` // with a leading "/"
	State struct {
		Running bool `json:"Running"`
	} `json:"State"`
	socket string // the socket that answered
}

// askByName asks every socket present for the container named name. It
// returns the one container of that name, and what each socket answered, for
// a message when none has it. Two runtimes with a container of that name is
// an error: the name does not say which.
func askByName(ctx context.Context, name string, sockets []string) (*runtimeContainer, []string, error) {
	var named []*runtimeContainer
	var answers []string
	for _, socket := range sockets {
		c, answer := ask(ctx, socket, name)
		answers = append(answers, answer)
		if c != nil {
			named = append(named, c)
		}
	}
	switch len(named) {
	case 0:
		return nil, answers, nil
	case 1:
		return named[0], answers, nil
	}
	var where []string
	for _, c := range named {
		where = append(where, fmt.Sprintf("%.12s on %s", c.ID, c.socket))
	}
	return nil, nil, fmt.Errorf("container name %s is ambiguous: %d runtimes have a container of that name (%s): give its ID",
		name, len(named), strings.Join(where, ", "))
}

// ask asks the runtime at socket for the container named name. It returns
// the container if the runtime has one of exactly that name, and otherwise
// what it answered, for a message.
func ask(ctx context.Context, socket, name string) (*runtimeContainer, string) {
	if _, err := os.Stat(socket); errors.Is(err, fs.ErrNotExist) {
		return nil, socket + " is not there"
	}
	c, err := inspect(ctx, socket, name)
	switch {
	case err != nil:
		return nil, fmt.Sprintf("%s failed: %v", socket, err)
	case c == nil:
		return nil, socket + " has no container of that name"
	case strings.TrimPrefix(c.Name, "/") != name:
		// The runtime matched an ID or ID prefix: the cgroup scan decides
		// that, for every runtime at once.
		return nil, fmt.Sprintf("%s has no container of that name, but the ID of its %s starts with it", socket, c.Name)
	}
	return c, ""
}

// inspect asks for GET /containers/NAME/json on a runtime's unix socket. A
// runtime that has no such container answers 404: that is nil, nil.
func inspect(ctx context.Context, socket, name string) (*runtimeContainer, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	// The host is a placeholder: the dialer ignores it.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://runtime/containers/"+url.PathEscape(name)+"/json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("no answer within %v", apiTimeout)
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return nil, errno // "connection refused", "permission denied"
		}
		return nil, err
	}
	defer resp.Body.Close()
	// An inspect answer is a few kilobytes; a runtime that sends more is
	// not one.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read its answer: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	default:
		var msg struct{ Message string }
		if json.Unmarshal(body, &msg) != nil || msg.Message == "" {
			msg.Message = "no message"
		}
		return nil, fmt.Errorf("answered %s: %.80q", resp.Status, msg.Message)
	}
	c := &runtimeContainer{socket: socket}
	if err := json.Unmarshal(body, c); err != nil {
		return nil, fmt.Errorf("answered what is not a container's description: %v", err)
	}
	if !containerRE.MatchString(c.ID) {
		return nil, fmt.Errorf("answered %.80q, which is not a container ID", c.ID)
	}
	return c, nil
}

// cgroup finds the cgroup of a container a runtime named, by its full ID.
func (c *runtimeContainer) cgroup(name string) (Dir, error) {
	if !c.State.Running {
		return Dir{}, fmt.Errorf("container %s (%.12s, on %s) is not running: its cgroup exists only while it runs; start it first", name, c.ID, c.socket)
	}
	found, err := cgroupsOfID(c.ID)
	if err != nil {
		return Dir{}, err
	}
	mnt, _ := Mount()
	switch len(found) {
	case 0:
		return Dir{}, fmt.Errorf("container %s (%s, on %s) runs, but no cgroup under %s is named for its ID: give its cgroup with --cgroup, or a process in it with --pid", name, c.ID, c.socket, mnt)
	case 1:
		return Resolve(found[0])
	}
	return Dir{}, fmt.Errorf("container %s (%.12s) has %d cgroups named for its ID: %s: give one with --cgroup", name, c.ID, len(found), strings.Join(found, ", "))
}

// cgroupsOfID returns the container cgroups whose ID starts with prefix, in
// lower case. A container's own cgroup may hold sub-cgroups named like it
// (podman's libpod-ID.scope/container): only the outermost is returned.
func cgroupsOfID(prefix string) ([]string, error) {
	var found []string
	if err := walk(func(path string, d fs.DirEntry) {
		if id, ok := ContainerID(d.Name()); ok && strings.HasPrefix(id, prefix) {
			found = append(found, path)
		}
	}); err != nil {
		return nil, err
	}
	return outermost(found), nil
}

func outermost(paths []string) []string {
	var out []string
	for _, p := range paths {
		nested := false
		for _, q := range paths {
			if q != p && strings.HasPrefix(p, q+"/") {
				nested = true
			}
		}
		if !nested {
			out = append(out, p)
		}
	}
	return out
}

func ambiguousID(prefix string, found []string) error {
	return fmt.Errorf("container %s is ambiguous: %d containers have an ID that starts with it, in cgroups %s: give more of the ID",
		prefix, len(found), strings.Join(found, ", "))
}

// notFound says where cgwall looked for a container, and what it was told.
func notFound(arg string, isID bool, answers []string) error {
	if isID {
		mnt, _ := Mount()
		answers = append(answers, fmt.Sprintf("no cgroup under %s is named for an ID that starts with %s", mnt, strings.ToLower(arg)))
	}
	return fmt.Errorf("no container %s (%s): is it running? ('docker ps' or 'podman ps' lists the running ones)", arg, strings.Join(answers, "; "))
}
