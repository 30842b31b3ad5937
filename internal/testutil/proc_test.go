package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the process under test: with fixtureEnv set it
// prints a line, then its ready line (unless told "never"), and exits 3 on
// SIGINT.
const fixtureEnv = "CGWALL_TESTUTIL_FIXTURE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fixtureEnv); mode != "" {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		fmt.Println("an event")
		switch mode {
		case "exit":
			fmt.Fprintln(os.Stderr, "cannot attach")
			os.Exit(1)
		case "ready":
			fmt.Fprintln(os.Stderr, "attached to the test")
		}
		<-sig
		fmt.Fprintln(os.Stderr, "detached")
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func fixture(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fixtureEnv+"="+mode)
	return cmd
}

func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := Start(ctx, fixture("ready"), "attached ")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stdout.WaitFor(ctx, "an event"); err != nil {
		t.Error(err)
	}
	code, err := p.Stop(ctx)
	if err != nil || code != 3 {
		t.Errorf("stop: exit %d, %v; want 3", code, err)
	}
	if got := p.Stderr.String(); got != "attached to the test\ndetached" {
		t.Errorf("stderr %q", got)
	}
}

func TestStartFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Start(ctx, fixture("exit"), "attached ")
	if err == nil || !strings.Contains(err.Error(), "ended without") || !strings.Contains(err.Error(), "cannot attach") {
		t.Errorf("exit before ready: %v", err)
	}

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var out strings.Builder
	cmd := fixture("never")
	cmd.Stdout = &out
	_, err = Start(short, cmd, "attached ")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("no ready line: %v", err)
	}
	if cmd.ProcessState == nil {
		t.Error("the process was not waited for")
	}
	if out.String() != "an event\n" {
		t.Errorf("stdout to the caller's writer: %q", out.String())
	}
}
