package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// choice is a flag that takes one of a few words. It is parsed with the
// flags, so a bad word is a flag error before anything runs, and the shell
// completes its words. The words are the parse function's, listed again for
// --help and completion; TestChoiceWords holds the two lists equal.
type choice[T any] struct {
	word  string
	val   T
	words []string
	parse func(string) (T, error)
}

func newChoice[T any](def string, parse func(string) (T, error), words ...string) *choice[T] {
	c := &choice[T]{parse: parse, words: words}
	if err := c.Set(def); err != nil {
		panic(err) // a default that is not one of the words is a bug
	}
	return c
}

func (c *choice[T]) String() string { return c.word }

// Type names the valid words in --help: "--default allow|block".
func (c *choice[T]) Type() string { return strings.Join(c.words, "|") }

func (c *choice[T]) Set(s string) error {
	v, err := c.parse(s)
	if err != nil {
		return err
	}
	c.word, c.val = s, v
	return nil
}

// Words are what the shell offers to complete the flag.
func (c *choice[T]) Words() []string { return c.words }

// wordsValue is every choice, whatever its T.
type wordsValue interface {
	pflag.Value
	Words() []string
}

func actionFlag(def policy.Action) *choice[policy.Action] {
	return newChoice(def.String(), policy.ParseAction, "allow", "block")
}

func logFlag(def policy.LogLevel) *choice[policy.LogLevel] {
	return newChoice(def.String(), policy.ParseLogLevel, "none", "drop", "all")
}

func formatFlag() *choice[events.Format] {
	return newChoice("text", events.ParseFormat, "text", "json")
}

// showFlag is watch's filter on what the policies stream: a display setting,
// unlike --log, which is the policy's.
func showFlag() *choice[policy.LogLevel] {
	return newChoice("all", parseShow, "drop", "all")
}

func parseShow(s string) (policy.LogLevel, error) {
	if s != "drop" && s != "all" {
		return 0, fmt.Errorf("%q is not a filter: use drop or all", s)
	}
	return policy.ParseLogLevel(s)
}

// flagError makes pflag's `invalid argument "deny" for "--default" flag: ...`
// read like every other error of cgwall: `--default: "deny" is not an action:
// use allow or block`. It leaves pflag's own messages, for its own types, as
// they are.
func flagError(_ *cobra.Command, err error) error {
	var ive *pflag.InvalidValueError
	if errors.As(err, &ive) {
		if f := ive.GetFlag(); isChoice(f) {
			name := "--" + f.Name
			if f.Shorthand != "" {
				name = "-" + f.Shorthand + "/" + name
			}
			err = fmt.Errorf("%s: %w", name, ive.Unwrap())
		}
	}
	return usageErr(err)
}

func isChoice(f *pflag.Flag) bool {
	_, ok := f.Value.(wordsValue)
	return ok
}

// completeWords registers shell completion for every choice flag of cmd and
// of the commands below it.
func completeWords(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if w, ok := f.Value.(wordsValue); ok {
			// It fails only for a flag that has a completion already, and none has.
			cmd.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(w.Words(), cobra.ShellCompDirectiveNoFileComp))
		}
	})
	for _, c := range cmd.Commands() {
		completeWords(c)
	}
}
