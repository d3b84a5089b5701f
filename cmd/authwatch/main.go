// Command authwatch watches Kubernetes pod logs for authentication failures
// and token expiry, counts and reports them, and can rotate the token that
// caused them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes follow grep's where a command searches: 0 found, 1 not found,
// 2 usage or input error.
const (
	exitOK       = 0
	exitNotFound = 1
	exitUsage    = 2
)

// exitError carries a specific exit code out of a cobra command.
// A nil err means nothing is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one authwatch command line and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "authwatch: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "authwatch: %v\n", err)
	return exitUsage
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "authwatch",
		Short:         "Watch Kubernetes pod logs for authentication failures and token expiry",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetVersionTemplate(fmt.Sprintf("authwatch %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH))
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// One line per command; each command lives in a file of its own.
	root.AddCommand(
		newVersionCmd(),
		newScanCmd(),
		newRulesCmd(),
		newRunCmd(),
		newConfigCmd(),
		newAlertCmd(),
		newRotateCmd(),
	)
	explainUsageErrors(root)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the authwatch version and the Go version it was built with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "authwatch %s (%s, %s/%s)\n",
				version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
