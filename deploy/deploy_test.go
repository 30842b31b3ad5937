// Package deploy holds what deploys the cgwall agent: the Kubernetes manifest
// in kubernetes/, with the systemd unit, the example policies (contrib/) and
// the Dockerfile at the repository's root. Its tests check that each says
// what the agent needs (docs/kubernetes.md says why), where no cluster or
// systemd is at hand to try them.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	agentpkg "github.com/cgwall/cgwall/internal/agent"
	"github.com/cgwall/cgwall/internal/policy"
)

const (
	manifestPath = "kubernetes/daemonset.yaml"
	unitPath     = "../contrib/systemd/cgwall-agent.service"
	policiesDir  = "../contrib/policies"
	metricsPort  = 9464
)

// agentCaps are the capabilities the agent needs, and all it may have
// (docs/kubernetes.md): Kubernetes spells them without CAP_, systemd with.
var agentCaps = []string{"SYS_ADMIN", "NET_ADMIN", "BPF", "PERFMON"}

// object is one document of the manifest, as far as the tests read it.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"` // ConfigMap
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"` // DaemonSet
}

type podSpec struct {
	ServiceAccountName string       `yaml:"serviceAccountName"`
	PriorityClassName  string       `yaml:"priorityClassName"`
	HostPID            bool         `yaml:"hostPID"`
	Tolerations        []toleration `yaml:"tolerations"`
	Containers         []container  `yaml:"containers"`
	Volumes            []volume     `yaml:"volumes"`
}

type toleration struct {
	Key      string `yaml:"key"`
	Operator string `yaml:"operator"`
	Effect   string `yaml:"effect"`
}

type container struct {
	Name            string        `yaml:"name"`
	Args            []string      `yaml:"args"`
	VolumeMounts    []volumeMount `yaml:"volumeMounts"`
	ReadinessProbe  *probe        `yaml:"readinessProbe"`
	LivenessProbe   *probe        `yaml:"livenessProbe"`
	StartupProbe    *probe        `yaml:"startupProbe"`
	SecurityContext struct {
		Privileged               *bool `yaml:"privileged"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		RunAsUser                *int  `yaml:"runAsUser"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type volumeMount struct {
	Name             string `yaml:"name"`
	MountPath        string `yaml:"mountPath"`
	MountPropagation string `yaml:"mountPropagation"`
	ReadOnly         bool   `yaml:"readOnly"`
}

type volume struct {
	Name     string `yaml:"name"`
	HostPath *struct {
		Path string `yaml:"path"`
	} `yaml:"hostPath"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	EmptyDir *struct{} `yaml:"emptyDir"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"` // a number or a port's name
	} `yaml:"httpGet"`
}

// loadManifest decodes every document of the manifest.
func loadManifest(t *testing.T) []object {
	t.Helper()
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s, document %d: %v", manifestPath, len(objs)+1, err)
		}
		objs = append(objs, o)
	}
}

// one returns the manifest's only object of a kind.
func one(t *testing.T, objs []object, kind string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s has %d objects of kind %s; want 1", manifestPath, len(found), kind)
	}
	return found[0]
}

// agent returns the DaemonSet's pod spec and its container named agent.
func agent(t *testing.T, objs []object) (podSpec, container) {
	t.Helper()
	pod := one(t, objs, "DaemonSet").Spec.Template.Spec
	for _, c := range pod.Containers {
		if c.Name == "agent" {
			return pod, c
		}
	}
	t.Fatalf("%s: the DaemonSet has no container named agent", manifestPath)
	return pod, container{}
}

// flag returns the value of --name in args ("--name VALUE" or "--name=VALUE").
func flag(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// TestManifestObjects checks that the manifest has what the DaemonSet uses,
// all in one namespace.
func TestManifestObjects(t *testing.T) {
	objs := loadManifest(t)
	ns := one(t, objs, "Namespace").Metadata.Name
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Metadata.Namespace != ns {
			t.Errorf("%s %s is in namespace %q, not %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, ns)
		}
	}
	pod, _ := agent(t, objs)
	if sa := one(t, objs, "ServiceAccount").Metadata.Name; pod.ServiceAccountName != sa {
		t.Errorf("the DaemonSet runs as service account %q, not the manifest's %q", pod.ServiceAccountName, sa)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName is %q; want system-node-critical", pod.PriorityClassName)
	}
	// A toleration of every taint: operator Exists with no key and no effect.
	if !slices.Contains(pod.Tolerations, toleration{Operator: "Exists"}) {
		t.Errorf("tolerations %+v do not tolerate every taint ({operator: Exists}): the agent must run on every node", pod.Tolerations)
	}
	// Targets are read from the cgroup tree, not from other processes.
	if pod.HostPID {
		t.Error("hostPID is true: the agent reads no other process's /proc entries")
	}
}

// TestManifestMounts checks that the agent has the node's cgroup tree and
// bpffs from hostPath, and its policies from the ConfigMap at --policies.
func TestManifestMounts(t *testing.T) {
	objs := loadManifest(t)
	pod, c := agent(t, objs)
	volumes := map[string]volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]volumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	for _, path := range []string{"/sys/fs/cgroup", "/sys/fs/bpf"} {
		m, ok := mounts[path]
		if !ok {
			t.Errorf("the agent container mounts nothing at %s", path)
			continue
		}
		if v := volumes[m.Name]; v.HostPath == nil || v.HostPath.Path != path {
			t.Errorf("%s is mounted from volume %q, not from hostPath %s", path, m.Name, path)
		}
	}
	// Kubernetes refuses Bidirectional to a container that is not
	// privileged.
	privileged := c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
	for _, m := range c.VolumeMounts {
		if m.MountPropagation == "Bidirectional" && !privileged {
			t.Errorf("%s has mountPropagation Bidirectional in a container that is not privileged: the API refuses it", m.MountPath)
		}
	}

	// The root file system is read-only: the folder of the agent's socket
	// must be a writable volume of the pod's own, or the agent cannot start.
	socket, ok := flag(c.Args, "--socket")
	if !ok {
		socket = agentpkg.DefaultSocket
	}
	if m, ok := mounts[filepath.Dir(socket)]; !ok || m.ReadOnly || volumes[m.Name].EmptyDir == nil {
		t.Errorf("the folder of the agent's socket %s is no writable emptyDir (mount %+v)", socket, m)
	}

	dir, ok := flag(c.Args, "--policies")
	if !ok {
		t.Fatalf("the agent's args %q have no --policies", c.Args)
	}
	cm := one(t, objs, "ConfigMap").Metadata.Name
	m, ok := mounts[dir]
	if !ok {
		t.Fatalf("--policies %s, where nothing is mounted", dir)
	}
	if v := volumes[m.Name]; v.ConfigMap == nil || v.ConfigMap.Name != cm {
		t.Errorf("--policies %s is mounted from volume %q, not from ConfigMap %s", dir, m.Name, cm)
	}
}

// TestManifestPrivileges checks the agent's capabilities: the four it needs,
// as root, and no others.
func TestManifestPrivileges(t *testing.T) {
	_, c := agent(t, loadManifest(t))
	sc := c.SecurityContext
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop is %q; want [ALL]", sc.Capabilities.Drop)
	}
	add := slices.Sorted(slices.Values(sc.Capabilities.Add))
	if want := slices.Sorted(slices.Values(agentCaps)); !slices.Equal(add, want) {
		t.Errorf("capabilities.add is %q; want exactly %q", sc.Capabilities.Add, want)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0: the agent's store in bpffs is root's")
	}
	// The API refuses allowPrivilegeEscalation: false with CAP_SYS_ADMIN.
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is false beside CAP_SYS_ADMIN: the API refuses the pod")
	}
}

// TestManifestProbes checks that readiness and liveness ask /healthz on the
// port --metrics serves.
func TestManifestProbes(t *testing.T) {
	_, c := agent(t, loadManifest(t))
	addr, ok := flag(c.Args, "--metrics")
	if want := fmt.Sprintf(":%d", metricsPort); !ok || !strings.HasSuffix(addr, want) {
		t.Fatalf("the agent's --metrics is %q; want it on port %d, which the probes ask", addr, metricsPort)
	}
	probes := map[string]*probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe}
	if c.StartupProbe != nil {
		probes["startupProbe"] = c.StartupProbe
	}
	for name, p := range probes {
		switch {
		case p == nil:
			t.Errorf("the agent has no %s", name)
		case p.HTTPGet == nil:
			t.Errorf("%s is not an httpGet", name)
		case p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.Value != strconv.Itoa(metricsPort):
			t.Errorf("%s asks %s on port %q; want /healthz on port %d", name, p.HTTPGet.Path, p.HTTPGet.Port.Value, metricsPort)
		}
	}
}

// TestPolicies checks that every policy file, in the ConfigMap and in
// contrib/policies, has targets and is otherwise a policy that cgwall
// parses.
func TestPolicies(t *testing.T) {
	files := map[string][]byte{}
	for name, text := range one(t, loadManifest(t), "ConfigMap").Data {
		files[manifestPath+": ConfigMap "+name] = []byte(text)
	}
	paths, err := filepath.Glob(filepath.Join(policiesDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no policy files in %s (%v)", policiesDir, err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = data
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			checkPolicy(t, name, data)
		})
	}
}

// checkPolicy parses a policy file as the agent does, targets and all, and
// checks that it has targets: a file without would be put on no cgroup.
func checkPolicy(t *testing.T, name string, data []byte) {
	_, set, err := policy.ParseFile(name, data)
	var fe *policy.FileError
	switch {
	case errors.As(err, &fe):
		t.Errorf("%s", strings.Join(fe.Lines(), "\n"))
	case err != nil:
		t.Error(err)
	case len(set.Targets) == 0:
		t.Errorf("%s has no targets: the agent would put it on no cgroup", name)
	}
}

// unit is a systemd unit file: each section's keys, with every value a key
// was given (systemd adds up repeated keys such as Before=).
type unit map[string]map[string][]string

func loadUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, section := unit{}, ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: a continued line, which this test does not read", path, n)
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is neither a section nor key=value in one", path, n, line)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(value))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns a key's last value, which is the one systemd uses for keys
// that take one.
func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// words returns every value of a key that lists words, split.
func (u unit) words(section, key string) []string {
	var all []string
	for _, v := range u[section][key] {
		all = append(all, strings.Fields(v)...)
	}
	return all
}

// TestSystemdUnit checks the unit's type, restarts, command and privileges.
func TestSystemdUnit(t *testing.T) {
	u := loadUnit(t, unitPath)
	for _, want := range []struct{ key, value string }{
		{"Type", "notify"},
		{"Restart", "on-failure"},
		{"ExecStart", "/usr/local/bin/cgwall agent --policies /etc/cgwall/policies --metrics 127.0.0.1:9464"},
	} {
		if got := u.get("Service", want.key); got != want.value {
			t.Errorf("%s: %s=%s; want %s=%s", unitPath, want.key, got, want.key, want.value)
		}
	}
	var caps []string
	for _, c := range agentCaps {
		caps = append(caps, "CAP_"+c)
	}
	slices.Sort(caps)
	for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got := slices.Sorted(slices.Values(u.words("Service", key))); !slices.Equal(got, caps) {
			t.Errorf("%s: %s=%s; want exactly %s", unitPath, key, strings.Join(got, " "), strings.Join(caps, " "))
		}
	}
	if !slices.Contains(u.words("Unit", "Before"), "multi-user.target") {
		t.Errorf("%s: Before=%s lacks multi-user.target", unitPath, strings.Join(u.words("Unit", "Before"), " "))
	}
	// Options that would keep the agent from pinning policies in bpffs,
	// or its resolver from the filtered cgroups' loopback.
	if u.get("Service", "ProtectKernelTunables") == "yes" && !slices.Contains(u.words("Service", "ReadWritePaths"), "/sys/fs/bpf") {
		t.Errorf("%s: ProtectKernelTunables=yes makes /sys/fs/bpf read-only, and ReadWritePaths= does not give it back", unitPath)
	}
	// ProtectSystem=strict makes /run read-only but for RuntimeDirectory=,
	// which must be the folder of the agent's socket.
	if u.get("Service", "ProtectSystem") == "strict" && "/run/"+u.get("Service", "RuntimeDirectory") != filepath.Dir(agentpkg.DefaultSocket) {
		t.Errorf("%s: RuntimeDirectory=%s; the agent's socket %s would be on a read-only /run", unitPath, u.get("Service", "RuntimeDirectory"), agentpkg.DefaultSocket)
	}
	if u.get("Service", "PrivateNetwork") == "yes" {
		t.Errorf("%s: PrivateNetwork=yes: the agent's resolver and /metrics must be on the host's loopback", unitPath)
	}
}
