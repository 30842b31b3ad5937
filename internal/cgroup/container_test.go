package cgroup

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeRuntime serves the one call of the docker and podman API that cgwall
// makes, GET /containers/NAME/json, on a unix socket, from a table of
// containers by name. A name in fail gets that status.
type fakeRuntime struct {
	containers map[string]string // name → the JSON answer
	fail       map[string]int
	hang       chan struct{} // if set, every answer waits for it to close
}

func (f *fakeRuntime) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.hang != nil {
		select {
		case <-f.hang:
		case <-r.Context().Done():
		}
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/containers/")
	name, ok2 := strings.CutSuffix(name, "/json")
	if r.Method != http.MethodGet || !ok || !ok2 {
		http.Error(w, `{"message":"page not found"}`, http.StatusNotFound)
		return
	}
	if code := f.fail[name]; code != 0 {
		w.WriteHeader(code)
		fmt.Fprint(w, `{"message":"the daemon is not well"}`)
		return
	}
	answer, ok := f.containers[name]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"message":"No such container: %s"}`, name)
		return
	}
	fmt.Fprint(w, answer)
}

// serve starts f on a socket in a temporary folder and returns its path.
func serve(t *testing.T, f *fakeRuntime) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "runtime.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	t.Cleanup(func() {
		if f.hang != nil {
			close(f.hang)
		}
		srv.Close()
	})
	return socket
}

func container(id, name string, running bool) string {
	return fmt.Sprintf(`{"Id":%q,"Name":"/%s","State":{"Running":%t,"Pid":4242},"Config":{"Image":"busybox"}}`, id, name, running)
}

const (
	idA = "aaaa0000000000000000000000000000000000000000000000000000000000a1"
	idB = "bbbb0000000000000000000000000000000000000000000000000000000000b2"
)

func TestAskByName(t *testing.T) {
	docker := serve(t, &fakeRuntime{
		containers: map[string]string{
			"web":   container(idA, "web", true),
			"aaaa":  container(idA, "web", true), // docker matches ID prefixes too
			"twin":  container(idA, "twin", true),
			"badid": container("../../etc", "badid", true),
			"trunc": `{"Id":`,
		},
		fail: map[string]int{"sick": http.StatusInternalServerError},
	})
	podman := serve(t, &fakeRuntime{containers: map[string]string{"twin": container(idB, "twin", true)}})
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	stale := filepath.Join(t.TempDir(), "stale.sock")
	if l, err := net.Listen("unix", stale); err != nil {
		t.Fatal(err)
	} else {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close() // the file stays, nobody listens
	}
	sockets := []string{docker, podman, missing}

	for _, tc := range []struct {
		name    string
		sockets []string
		wantID  string
		answers []string // each contained in the answer of that socket
		err     string
	}{
		{name: "web", sockets: sockets, wantID: idA},
		{name: "nobody", sockets: sockets, answers: []string{docker + " has no container of that name", podman + " has no container of that name", missing + " is not there"}},
		{name: "aaaa", sockets: sockets[:1], answers: []string{docker + " has no container of that name, but the ID of its /web starts with it"}},
		{name: "sick", sockets: sockets[:1], answers: []string{docker + ` failed: answered 500 Internal Server Error: "the daemon is not well"`}},
		{name: "badid", sockets: sockets[:1], answers: []string{docker + ` failed: answered "../../etc", which is not a container ID`}},
		{name: "trunc", sockets: sockets[:1], answers: []string{docker + " failed: answered what is not a container's description"}},
		{name: "web", sockets: []string{stale}, answers: []string{stale + " failed: connection refused"}},
		{name: "twin", sockets: sockets, err: fmt.Sprintf("container name twin is ambiguous: 2 runtimes have a container of that name (aaaa00000000 on %s, bbbb00000000 on %s): give its ID", docker, podman)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, answers, err := askByName(context.Background(), tc.name, tc.sockets)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantID != "" {
				if c == nil || c.ID != tc.wantID || c.socket != docker {
					t.Fatalf("got %+v; want %s from %s", c, tc.wantID, docker)
				}
				return
			}
			if c != nil {
				t.Fatalf("got %+v; want none", c)
			}
			if len(answers) < len(tc.answers) {
				t.Fatalf("answers %q; want %q", answers, tc.answers)
			}
			for i, want := range tc.answers {
				if !strings.Contains(answers[i], want) {
					t.Errorf("answer %q; want it to contain %q", answers[i], want)
				}
			}
		})
	}
}

// TestAskHungRuntime checks that a runtime that never answers costs at most
// apiTimeout.
func TestAskHungRuntime(t *testing.T) {
	defer func(d time.Duration) { apiTimeout = d }(apiTimeout)
	apiTimeout = 100 * time.Millisecond
	socket := serve(t, &fakeRuntime{hang: make(chan struct{})})
	start := time.Now()
	_, answers, err := askByName(context.Background(), "web", []string{socket})
	if err != nil || len(answers) != 1 || answers[0] != socket+" failed: no answer within 100ms" {
		t.Fatalf("answers %q, err %v", answers, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestOfContainer(t *testing.T) {
	mnt, err := Mount()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	socket := serve(t, &fakeRuntime{containers: map[string]string{
		"stopped": container(idA, "stopped", false),
		"ghost":   container(idB, "ghost", true), // running, but no cgroup has its ID
	}})
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	sockets := []string{socket, missing}
	for _, tc := range []struct{ arg, want string }{
		{"stopped", fmt.Sprintf("container stopped (aaaa00000000, on %s) is not running: its cgroup exists only while it runs; start it first", socket)},
		{"ghost", fmt.Sprintf("container ghost (%s, on %s) runs, but no cgroup under %s is named for its ID", idB, socket, mnt)},
		{"no-such", fmt.Sprintf("no container no-such (%s has no container of that name; %s is not there): is it running?", socket, missing)},
		{"C0FFEE", fmt.Sprintf("no container C0FFEE (%s has no container of that name; %s is not there; no cgroup under %s is named for an ID that starts with c0ffee): is it running?", socket, missing, mnt)},
		{"not/a/name", `"not/a/name" is not a container name or ID: give its name, its ID or a unique prefix of the ID`},
		{"", `"" is not a container name or ID`},
		{"-rm", `"-rm" is not a container name or ID`},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			_, err := ofContainer(context.Background(), tc.arg, sockets)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ofContainer(%q) = %v; want an error containing %q", tc.arg, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("asking made the missing socket")
	}
}

func TestContainerID(t *testing.T) {
	id := strings.Repeat("3f4e1a", 10) + "abcd"
	for name, want := range map[string]string{
		"docker-" + id + ".scope":         id,
		"cri-containerd-" + id + ".scope": id,
		"crio-" + id + ".scope":           id,
		"libpod-" + id + ".scope":         id,
		id:                                id,
		"container":                       "",
		"docker-" + id[:12] + ".scope":    "",
		"docker-" + strings.ToUpper(id):   "",
		"system.slice":                    "",
		"libpod-conmon-" + id + ".scope":  "",
		"crio-conmon-" + id + ".scope":    "",
	} {
		got, ok := ContainerID(name)
		if got != want || ok != (want != "") {
			t.Errorf("ContainerID(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}
