//go:build !names

package main

import (
	"context"
	"errors"
	"io"
)

var errNoNames = errors.New("the decision cost with learned addresses needs name rules in the datapath: this harness was built without them")

// runLearned stands for learned.go's until name rules (policy names,
// datapath.WithDNS and Learn) are on main: build with -tags names.
func runLearned(ctx context.Context, cfg *config, root string, res *results, log io.Writer) error {
	return errNoNames
}
