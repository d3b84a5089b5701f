package remediation

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/authwatch/authwatch/internal/secret"
)

type runtimeObject = runtime.Object

func secretValue(s string) secret.Value { return secret.New(s) }

func decodeConfig(t *testing.T, doc string) (Config, error) {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return c, c.Validate()
}

func TestConfigDefaults(t *testing.T) {
	c, err := decodeConfig(t, `
targets:
  - name: town-builder-api-token
    on: [token-expired]
    secret: {namespace: town-builder, name: town-builder-secrets, key: TOWN_API_JWT_TOKEN}
    restart: [{kind: Deployment, name: town-builder}]
    source: {http: {url: "http://127.0.0.1:8000/api/token/", credentials_secret: town-builder-login, token_path: access}}
`)
	if err != nil {
		t.Fatal(err)
	}
	tg := &c.Targets[0]
	if !tg.IsDryRun() {
		t.Error("a target without dry_run is not a dry run")
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"cooldown", tg.Cooldown, DefaultCooldown},
		{"max_per_hour", tg.MaxPerHour, DefaultMaxPerHour},
		{"rollout_timeout", tg.RolloutTimeout, DefaultRolloutTimeout},
		{"verify_window", tg.VerifyWindow, DefaultVerifyWindow},
		{"format", tg.Format, "auto"},
		{"keep_previous", tg.KeepPrevious, "value"},
		{"method", tg.Source.HTTP.Method, "POST"},
		{"body_format", tg.Source.HTTP.BodyFormat, "json"},
		{"periodic_repeats", tg.CircuitBreaker.PeriodicRepeats, DefaultPeriodicRepeats},
		{"renew_before", tg.RenewBefore, time.Duration(0)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if !tg.workloads["Deployment/town-builder"] {
		t.Errorf("trigger workloads = %v, want the restart list", tg.workloads)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{name: "missing fields", doc: `
targets:
  - source: {command: {command: [/bin/issuer]}}
`, want: []string{
			"remediation.targets[0].name: missing",
			"remediation.targets[0].secret.name: missing",
			"remediation.targets[0].secret.namespace: missing",
			"remediation.targets[0].secret.key: missing",
		}},
		{name: "bad values", doc: `
targets:
  - name: a
    secret: {namespace: n, name: s, key: k}
    restart: [{kind: Pod, name: p}]
    workloads: [town-builder]
    categories: [error]
    format: pem
    keep_previous: copy
    cooldown: -1m
    circuit_breaker: {tolerance: 2}
    source: {http: {url: "ftp://x", method: DELETE, body_format: xml}}
`, want: []string{
			`remediation.targets[0].restart[0].kind: invalid kind "Pod"`,
			`remediation.targets[0].workloads[0]: invalid workload "town-builder"`,
			`remediation.targets[0].categories[0]: invalid category "error"`,
			`remediation.targets[0].format: invalid format "pem"`,
			`remediation.targets[0].keep_previous: invalid value "copy"`,
			`remediation.targets[0].cooldown: invalid duration -1m0s`,
			`remediation.targets[0].circuit_breaker.tolerance: invalid value 2`,
			`remediation.targets[0].source.http.url: invalid URL "ftp://x"`,
			`remediation.targets[0].source.http.method: invalid method "DELETE"`,
			`remediation.targets[0].source.http.body_format: invalid format "xml"`,
			`remediation.targets[0].source.http.token_path: missing`,
		}},
		{name: "two sources", doc: `
targets:
  - name: a
    secret: {namespace: n, name: s, key: k}
    source: {command: {command: [x]}, exec: {selector: app=x, command: [y], token_pattern: "(.+)"}}
`, want: []string{"remediation.targets[0].source: set exactly one of http, exec and command (found 2)"}},
		{name: "exec errors", doc: `
targets:
  - name: a
    secret: {namespace: n, name: s, key: k}
    source: {exec: {selector: "a in (", token_pattern: "("}}
`, want: []string{
			`remediation.targets[0].source.exec.selector: invalid label selector "a in ("`,
			"remediation.targets[0].source.exec.command: missing",
			`remediation.targets[0].source.exec.token_pattern: invalid regular expression "("`,
		}},
		{name: "credentials in url", doc: `
targets:
  - name: a
    secret: {namespace: n, name: s, key: k}
    source: {http: {url: "https://user:hunter2@issuer/token", token_path: access, credentials_secret: x, credentials_file: y}}
`, want: []string{
			`remediation.targets[0].source.http.url: URL "https://user:xxxxx@issuer/token" carries credentials`,
			"remediation.targets[0].source.http.credentials_secret: credentials_secret and credentials_file are both set",
		}},
		{name: "duplicate names", doc: `
targets:
  - {name: a, secret: {namespace: n, name: s, key: k}, source: {command: {command: [x]}}}
  - {name: a, secret: {namespace: n, name: s, key: k}, source: {command: {command: [x]}}}
`, want: []string{`remediation.targets[1].name: duplicate target name "a", also used by remediation.targets[0]`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeConfig(t, tc.doc)
			if err == nil {
				t.Fatal("Validate returned nil")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors lack %q; got:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Error("error repeats the password in the URL")
			}
		})
	}
}

func TestConsumption(t *testing.T) {
	secretVolume := func(items ...corev1.KeyToPath) corev1.Volume {
		return corev1.Volume{Name: "tok", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: testSecret, Items: items}}}
	}
	tests := []struct {
		name string
		spec corev1.PodSpec
		want Consumption
	}{
		{name: "env secretKeyRef", spec: testDeployment().Spec.Template.Spec, want: ConsumedEnv},
		{name: "envFrom", spec: corev1.PodSpec{Containers: []corev1.Container{{EnvFrom: []corev1.EnvFromSource{{
			SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: testSecret}},
		}}}}}, want: ConsumedEnv},
		{name: "plain volume", spec: corev1.PodSpec{Volumes: []corev1.Volume{secretVolume()},
			Containers: []corev1.Container{{VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/var/run/tok"}}}}}, want: ConsumedVolume},
		{name: "subPath volume", spec: corev1.PodSpec{Volumes: []corev1.Volume{secretVolume()},
			Containers: []corev1.Container{{VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/etc/tok", SubPath: testKey}}}}}, want: ConsumedSubPath},
		{name: "volume without the key", spec: corev1.PodSpec{Volumes: []corev1.Volume{secretVolume(corev1.KeyToPath{Key: "OTHER", Path: "o"})},
			Containers: []corev1.Container{{VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/t"}}}}}, want: ConsumedNone},
		{name: "projected volume", spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: testSecret}}}},
		}}}}, Containers: []corev1.Container{{VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/t"}}}}}, want: ConsumedVolume},
		{name: "other secret", spec: corev1.PodSpec{Containers: []corev1.Container{{Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "other"}, Key: testKey},
		}}}}}}, want: ConsumedNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := consumption(&tc.spec, testSecret, testKey); got != tc.want {
				t.Errorf("consumption = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPeriodic(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(minutes ...int) []time.Time {
		var out []time.Time
		for _, m := range minutes {
			out = append(out, base.Add(time.Duration(m)*time.Minute))
		}
		return out
	}
	cb := CircuitBreaker{PeriodicRepeats: 3, Tolerance: 0.2, MaxPeriod: time.Hour}
	tests := []struct {
		name    string
		history []time.Time
		now     int
		want    bool
	}{
		{name: "steady with now", history: at(0, 15, 30), now: 45, want: true},
		{name: "steady history alone", history: at(0, 15, 30, 45), now: 600, want: true},
		{name: "jitter within tolerance", history: at(0, 14, 31), now: 45, want: true},
		{name: "irregular", history: at(0, 5, 30), now: 45, want: false},
		{name: "too few", history: at(0, 15), now: 30, want: false},
		{name: "period above max", history: at(0, 90, 180), now: 270, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, got := periodic(tc.history, base.Add(time.Duration(tc.now)*time.Minute), cb)
			if got != tc.want {
				t.Errorf("periodic = %v, want %v", got, tc.want)
			}
		})
	}
}
