//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
	"github.com/authwatch/authwatch/incident"
)

// incidentCount sums the match counts of the incidents in the checkpoint
// of ns.
func incidentCount(ctx context.Context, ns string) (int, error) {
	section, err := checkpointSection(ctx, ns, "incidents")
	if err != nil {
		return 0, err
	}
	var snap incident.Snapshot
	if err := json.Unmarshal([]byte(section), &snap); err != nil {
		return 0, fmt.Errorf("incidents section: %w", err)
	}
	n := 0
	for _, tr := range snap.Tracks {
		n += tr.Incident.Count
	}
	return n, nil
}

// Two SIGKILLs while two containers log an expired token on every line:
// the incident restored after each restart counts exactly the lines
// before the restored resume points, so in the end it counts each line
// once.
func TestRunSIGKILLCountsEachLineOnce(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "sigkill")
	config := filepath.Join(t.TempDir(), "authwatch.yaml")
	err := os.WriteFile(config, []byte(`policies:
  - name: token-expired
    select: {categories: [token_expired]}
    threshold: 1
    window: 10m
    resolve_after: 30m
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--config=" + config, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=" + ns, "--checkpoint-interval=1s"}
	d := startAuthwatch(t, cluster.Kubeconfig(), args...)
	createTownBuilder(t, ns, 2,
		`emit count=600 every=20ms text="calling the billing API: jwt expired (step {seq})"`,
		`sleep forever`)
	for _, after := range []time.Duration{1500 * time.Millisecond, 2300 * time.Millisecond} {
		time.Sleep(after)
		if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d.done
		d = startAuthwatch(t, cluster.Kubeconfig(), args...)
	}
	recs := waitRecords(t, ns, "two containers writing 600 lines each", time.Minute, func(recs []nodeagent.Record) error {
		if len(recs) != 1200 {
			return fmt.Errorf("%d of 1,200 lines written", len(recs))
		}
		return nil
	})
	var counted int
	err = harness.WaitFor(ctx, time.Minute, "the incident counting every line", func(ctx context.Context) (bool, error) {
		counted, err = incidentCount(ctx, ns)
		return err == nil && counted >= len(recs), fmt.Errorf("incident count %d of %d lines (%v)", counted, len(recs), err)
	})
	if err != nil {
		t.Fatal(err)
	}
	d.stop()
	if counted, err = incidentCount(ctx, ns); err != nil || counted != len(recs) {
		t.Errorf("incident count after two SIGKILLs and a stop = %d (%v), want the %d lines written", counted, err, len(recs))
	}
}
