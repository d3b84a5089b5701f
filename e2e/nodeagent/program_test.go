package nodeagent

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`emit count=3 text=hi`, []string{"emit", "count=3", "text=hi"}},
		{`emit text="two words"`, []string{"emit", "text=two words"}},
		{`emit text="say \"hi\" \\ bye"`, []string{"emit", `text=say "hi" \ bye`}},
		{"  sleep\t1s  ", []string{"sleep", "1s"}},
	}
	for _, tc := range tests {
		got, err := splitWords(tc.in)
		if err != nil {
			t.Errorf("splitWords(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("splitWords(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
	if _, err := splitWords(`emit text="open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestParseScriptErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "needs args"},
		{[]string{"jump"}, `unknown step "jump"`},
		{[]string{"emit count=x text=a"}, `count="x" is not an integer`},
		{[]string{"emit every=fast text=a"}, `every="fast" is not a duration`},
		{[]string{"emit count=1"}, "emit needs text="},
		{[]string{"emit colour=red text=a"}, `unknown argument "colour=red"`},
		{[]string{"auth url=http://127.0.0.1:1/"}, "auth needs url= and one of env= or file="},
		{[]string{"auth url=http://127.0.0.1:1/ env=A file=/t"}, "auth needs url= and one of env= or file="},
		{[]string{"sleep soon"}, `sleep "soon"`},
		{[]string{"exit one"}, `exit "one"`},
	}
	for _, tc := range tests {
		_, err := parseScript(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseScript(%q) error = %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseScript([]string{`emit count=0 every=1s text="a b"`, "sleep forever", "exit 2", "loop times=3"}); err != nil {
		t.Errorf("valid script rejected: %v", err)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	tests := map[string]string{
		"plain":       "plain",
		"$(A)-$(B)":   "x-y",
		"$(MISSING)":  "$(MISSING)",
		"$$(A)":       "$(A)",
		"cost $5":     "cost $5",
		"open $(A":    "open $(A",
		"trailing $":  "trailing $",
		"$(A)$(A)$$$": "xx$$",
	}
	for in, want := range tests {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseLogOptions(t *testing.T) {
	r := httptest.NewRequest("GET", "/containerLogs/ns/pod/c?follow=true&timestamps=true&tailLines=5&limitBytes=100&sinceTime=2026-01-02T03:04:05Z", nil)
	o, err := parseLogOptions(r)
	if err != nil {
		t.Fatal(err)
	}
	want := logOptions{follow: true, timestamps: true, tailLines: 5, limitBytes: 100, since: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if diff := cmp.Diff(want, o, cmp.AllowUnexported(logOptions{})); diff != "" {
		t.Errorf("parseLogOptions (-want +got):\n%s", diff)
	}
	for _, q := range []string{"tailLines=-1", "limitBytes=0", "sinceTime=yesterday", "sinceSeconds=x"} {
		if _, err := parseLogOptions(httptest.NewRequest("GET", "/containerLogs/ns/pod/c?"+q, nil)); err == nil {
			t.Errorf("query %q accepted", q)
		}
	}
}

func TestWriteVolume(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	if err := writeVolume(dir, map[string][]byte{"token": []byte("one"), "sub/key": []byte("k")}); err != nil {
		t.Fatal(err)
	}
	if err := writeVolume(dir, map[string][]byte{"token": []byte("two")}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil || string(got) != "two" {
		t.Errorf("token = %q, %v; want the rewritten value %q", got, err, "two")
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "key")); !os.IsNotExist(err) {
		t.Errorf("file of a removed key still there: %v", err)
	}
}

func TestHostPath(t *testing.T) {
	c := &container{
		pod: &podRunner{volDir: "/agent/pod"},
		spec: corev1.Container{Name: "app", VolumeMounts: []corev1.VolumeMount{
			{Name: "outer", MountPath: "/var/run"},
			{Name: "tok", MountPath: "/var/run/tok/"},
		}},
	}
	tests := map[string]string{
		"/var/run/tok/token": "/agent/pod/tok/token",
		"/var/run/other":     "/agent/pod/outer/other",
	}
	for in, want := range tests {
		got, err := c.hostPath(in)
		if err != nil || got != want {
			t.Errorf("hostPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := c.hostPath("/etc/passwd"); err == nil {
		t.Error("path outside every mount accepted")
	}
}
