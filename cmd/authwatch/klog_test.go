package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

// TestKlogRoutedToJSON proves that what client-go logs through klog ends
// up as JSON records of our logger, and that nothing goes to standard
// error in klog's own format.
func TestKlogRoutedToJSON(t *testing.T) {
	var out bytes.Buffer
	log, err := newLogger(&out, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	routeKlog(log)
	t.Cleanup(func() { klog.ClearLogger() })

	// The calls client-go makes: printf style (leader election),
	// structured, errors, and the contextual logger.
	klog.Infof("attempting to acquire leader lease %s/%s...", "authwatch", "authwatch-leader")
	klog.InfoS("successfully acquired lease", "lease", "authwatch/authwatch-leader")
	klog.Warningf("failed to renew lease: %v", errors.New("timed out"))
	klog.ErrorS(errors.New("connection refused"), "error retrieving resource lock", "lease", "authwatch/authwatch-leader")
	klog.Background().Info("watch restarted", "resource", "pods")
	klog.Flush()

	os.Stderr = stderr
	w.Close()
	direct, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(direct) > 0 {
		t.Errorf("klog wrote to standard error directly:\n%s", direct)
	}

	want := []string{"attempting to acquire leader lease authwatch/authwatch-leader...", "successfully acquired lease",
		"failed to renew lease: timed out", "error retrieving resource lock", "watch restarted"}
	var got []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("line is not JSON: %q (%v)", sc.Text(), err)
			continue
		}
		if rec["component"] != "client-go" {
			t.Errorf("record %q lacks component=client-go", sc.Text())
		}
		msg, _ := rec["msg"].(string)
		got = append(got, strings.TrimSpace(msg))
	}
	if len(got) != len(want) {
		t.Fatalf("JSON records %q, want %d: %q", got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d msg = %q, want %q", i, got[i], want[i])
		}
	}
}
