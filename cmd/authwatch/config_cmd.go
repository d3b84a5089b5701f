package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with the authwatch configuration file",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file, the files it names and its rule packs without running; exit 0 when valid, 1 when not",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(args[0])
			if err != nil {
				return &exitError{code: exitInvalid, err: err}
			}
			warnings, err := cfg.checkReferences()
			for _, w := range warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "authwatch: warning: config %s: %s\n", args[0], w)
			}
			if err != nil {
				return &exitError{code: exitInvalid, err: fmt.Errorf("config %s is invalid:\n%w", args[0], err)}
			}
			// The packs are compiled as run would, so a bad rule fails here.
			if _, err := compileRules(cfg.Rules); err != nil {
				return &exitError{code: exitInvalid, err: fmt.Errorf("config %s: %w", args[0], err)}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n", args[0])
			return err
		},
	})
	return cmd
}

// exitInvalid is the exit code of `config validate` for an invalid file.
const exitInvalid = 1
