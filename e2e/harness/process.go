package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is one control-plane binary the harness runs. Its standard output
// and error go to a log file that stays until the cluster's folder is
// removed, so a failing test can print it.
type process struct {
	name    string
	path    string
	args    []string
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // exit status; valid once done is closed
}

func (p *process) start() error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("harness: open %s log: %w", p.name, err)
	}
	fmt.Fprintf(logFile, "--- %s: %s %v\n", time.Now().UTC().Format(time.RFC3339), p.path, p.args)
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// A process group of its own, so that a Ctrl-C in a terminal reaches
	// the harness, which then stops the process in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("harness: start %s (%s): %w", p.name, p.path, err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return nil
}

// running reports whether the process was started and has not exited.
func (p *process) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exited returns the exit error of a process that stopped on its own, or
// nil while it runs.
func (p *process) exited() error {
	if p.done == nil {
		return nil
	}
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("harness: %s exited with status 0", p.name)
		}
		return fmt.Errorf("harness: %s exited: %w", p.name, p.err)
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to grace, then kills the process.
// It returns nil for a process that was never started or already stopped.
func (p *process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: kill %s: %w", p.name, err)
	}
	<-p.done
	return nil
}
