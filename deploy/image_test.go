package deploy

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerBuild builds the image as the Dockerfile says, from a context of
// the static binary, the Dockerfile and .dockerignore (which must let the
// binary through), and checks what it runs. It needs a docker daemon: it
// skips without one, and fails under CI=true, where test.sh starts dockerd.
func TestDockerBuild(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		need(t, "docker is not installed (test.sh installs docker.io)")
	}
	if out, err := dockerOut("info", "--format", "{{.ServerVersion}}"); err != nil {
		need(t, "no docker daemon answers (docker info: "+out+"): start one as test.sh's start_dockerd does")
	}

	ctx := t.TempDir()
	bin := filepath.Join(ctx, "cgwall")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/cgwall")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build -trimpath ./cmd/cgwall: %v\n%s", err, out)
	}
	checkStatic(t, bin)
	for _, f := range []string{"Dockerfile", ".dockerignore"} {
		data, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctx, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	image := fmt.Sprintf("cgwall-agent-test:%d", os.Getpid())
	t.Cleanup(func() {
		if out, err := dockerOut("image", "rm", "--force", image); err != nil {
			t.Errorf("docker image rm %s: %v: %s", image, err, out)
		}
	})
	if out, err := dockerOut("build", "--tag", image, ctx); err != nil {
		t.Fatalf("docker build --tag %s (context: the binary, Dockerfile, .dockerignore): %v\n%s", image, err, out)
	}

	got, err := dockerOut("image", "inspect", "--format", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}", image)
	if err != nil {
		t.Fatalf("docker image inspect %s: %v: %s", image, err, got)
	}
	if want := `["/cgwall","agent"] ["--policies","/etc/cgwall/policies","--metrics","0.0.0.0:9464"]`; got != want {
		t.Errorf("the image runs %s; want %s", got, want)
	}
	// The binary runs in the empty image: nothing it needs is missing.
	out, err := dockerOut("run", "--rm", "--network", "none", "--entrypoint", "/cgwall", image, "--version")
	if err != nil || !strings.HasPrefix(out, "cgwall ") {
		t.Errorf("docker run %s /cgwall --version: %v: %q", image, err, out)
	}
}

// checkStatic fails unless bin is linked statically, as FROM scratch needs:
// an ELF file with no interpreter to load it.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is linked dynamically: the scratch image has no libc", bin)
		}
	}
}

func dockerOut(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// need skips a test for a missing piece, or fails it under CI=true, as the
// e2e tests do.
func need(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", reason)
	}
	t.Skip(reason)
}
