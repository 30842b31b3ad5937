// Command cgwall is a per-cgroup network firewall built on eBPF.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cgwall/cgwall/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
