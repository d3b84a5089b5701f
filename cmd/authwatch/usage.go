package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// explainUsageErrors rewrites cobra's argument and flag errors on c and
// its subcommands. The new errors name the expected arguments, point to
// the command's --help and exit with exitUsage.
func explainUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%w; see %s --help", err, cmd.CommandPath())}
	})
	wrapArgs(c)
}

func wrapArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if check(cmd, args) == nil {
				return nil
			}
			return &exitError{code: exitUsage, err: argsError(cmd, args)}
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// argsError names what cmd expects, taken from the words after the
// command name in its Use line (for example FILE or FILE...).
func argsError(cmd *cobra.Command, args []string) error {
	want := strings.Join(strings.Fields(cmd.Use)[1:], " ")
	got := "no arguments"
	if len(args) > 0 {
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = fmt.Sprintf("%q", a)
		}
		got = fmt.Sprintf("%d arguments (%s)", len(args), strings.Join(quoted, ", "))
		if len(args) == 1 {
			got = "1 argument (" + quoted[0] + ")"
		}
	}
	// The root's name already starts every message.
	name := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
	if want == "" {
		return fmt.Errorf("%s: takes no arguments, got %s; see %s --help", name, got, cmd.CommandPath())
	}
	return fmt.Errorf("%s: expected %s, got %s; see %s --help", name, want, got, cmd.CommandPath())
}
