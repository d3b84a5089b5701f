// Package alerting delivers incident transitions to people and systems:
// Slack (threads through a bot token, or an incoming webhook), the
// Alertmanager v2 API, and HMAC-signed JSON webhooks. It routes, queues,
// rate-limits, retries, redacts secrets and counts every delivery. It
// does not decide what an incident is; the incident package does.
package alerting

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"text/template"
	"time"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/secret"
)

// Config is the `alerting` section of the configuration file. Every
// notifier is optional; with none configured, incidents are only counted.
type Config struct {
	Slack        *SlackConfig        `yaml:"slack"`
	Alertmanager *AlertmanagerConfig `yaml:"alertmanager"`
	Webhooks     []WebhookConfig     `yaml:"webhooks"`
}

// SlackConfig configures Slack. Exactly one credential is set: a bot token
// (threads, edits on resolve, routes) or an incoming webhook URL (one
// message per transition in the webhook's channel).
type SlackConfig struct {
	TokenFile      string `yaml:"token_file"`
	TokenEnv       string `yaml:"token_env"`
	WebhookURLFile string `yaml:"webhook_url_file"`
	WebhookURLEnv  string `yaml:"webhook_url_env"`
	// Channel is the default channel name or ID for a bot token.
	Channel string  `yaml:"channel"`
	Routes  []Route `yaml:"routes"`
	// UpdateInterval is the minimum time between two thread replies for
	// one incident; updates in between are coalesced. Default 5m.
	UpdateInterval time.Duration `yaml:"update_interval"`
	// MessageInterval is the minimum time between two requests to one
	// channel. Default 1s, which is Slack's documented rate for posting.
	MessageInterval time.Duration `yaml:"message_interval"`
	// RetryAfter is the wait after a 429 or a "ratelimited" error that
	// carries no Retry-After header. Default 5s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// AuthCheckInterval is how often auth.test runs after the start.
	// Default 5m.
	AuthCheckInterval time.Duration `yaml:"auth_check_interval"`
	// Links are buttons added to each incident message.
	Links []Link `yaml:"links"`
	// APIURL replaces https://slack.com/api/, for Slack-compatible
	// gateways and tests.
	APIURL string `yaml:"api_url"`
}

// Route sends the incidents that Match selects to Channel. The first
// matching route wins; incidents that no route selects go to the default
// channel.
type Route struct {
	Match   Matcher `yaml:"match"`
	Channel string  `yaml:"channel"`
}

// Matcher selects incidents by policy, namespace and workload. Empty lists
// match everything. Workloads are path.Match patterns such as
// "Deployment/api-*".
type Matcher struct {
	Policies   []string `yaml:"policies"`
	Namespaces []string `yaml:"namespaces"`
	Workloads  []string `yaml:"workloads"`
}

// Link is a button in a Slack message. URL is a text/template executed
// with LinkData, for example
// "https://grafana.example/d/auth?var-namespace={{.Namespace | urlquery}}".
type Link struct {
	Text string `yaml:"text"`
	URL  string `yaml:"url"`

	tmpl *template.Template
}

// LinkData holds the fields a Link URL template can use.
type LinkData struct {
	ID, Policy, Namespace, Workload, Kind, Name string
}

// AlertmanagerConfig configures pushes to an Alertmanager.
type AlertmanagerConfig struct {
	// URL is the Alertmanager base URL; alerts go to URL + /api/v2/alerts.
	URL string `yaml:"url"`
	// RefreshInterval is how often open incidents are pushed again so
	// that Alertmanager keeps them active. Default 1m.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// WebhookConfig configures one signed webhook.
type WebhookConfig struct {
	// Name identifies the webhook in metrics and logs. Default
	// "webhook-<index>".
	Name       string  `yaml:"name"`
	URL        string  `yaml:"url"`
	SecretFile string  `yaml:"secret_file"`
	SecretEnv  string  `yaml:"secret_env"`
	Match      Matcher `yaml:"match"`
	// Events lists the transitions sent: opened, updated, resolved.
	// Default opened and resolved.
	Events []string `yaml:"events"`
	// UpdateInterval is the minimum time between two updated deliveries
	// for one incident; each carries cumulative counts, so the skipped
	// ones lose nothing. Default 5m.
	UpdateInterval time.Duration `yaml:"update_interval"`
	// Timeout bounds one attempt. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts bounds the attempts per delivery. Default 8.
	MaxAttempts int `yaml:"max_attempts"`
}

func (c *SlackConfig) setDefaults() {
	if c.UpdateInterval == 0 {
		c.UpdateInterval = 5 * time.Minute
	}
	if c.MessageInterval == 0 {
		c.MessageInterval = time.Second
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 5 * time.Second
	}
	if c.AuthCheckInterval == 0 {
		c.AuthCheckInterval = 5 * time.Minute
	}
}

// Validate applies defaults and checks the section. Errors name their YAML
// path under `alerting`. It does not read the secret files; Load does.
func (c *Config) Validate() error {
	var errs []error
	if s := c.Slack; s != nil {
		s.setDefaults()
		errs = append(errs, s.validate("alerting.slack"))
	}
	if a := c.Alertmanager; a != nil {
		if a.RefreshInterval == 0 {
			a.RefreshInterval = time.Minute
		}
		if a.Timeout == 0 {
			a.Timeout = 10 * time.Second
		}
		errs = append(errs, validateURL("alerting.alertmanager.url", a.URL))
		if a.RefreshInterval < 0 {
			errs = append(errs, fmt.Errorf("alerting.alertmanager.refresh_interval: invalid value %s: use a positive duration such as 1m", a.RefreshInterval))
		}
	}
	names := map[string]bool{}
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		at := fmt.Sprintf("alerting.webhooks[%d]", i)
		if w.Name == "" {
			w.Name = fmt.Sprintf("webhook-%d", i)
		}
		if names[w.Name] {
			errs = append(errs, fmt.Errorf("%s.name: duplicate webhook name %q: give each webhook its own name", at, w.Name))
		}
		names[w.Name] = true
		if w.Timeout == 0 {
			w.Timeout = 10 * time.Second
		}
		if w.MaxAttempts == 0 {
			w.MaxAttempts = 8
		}
		if w.UpdateInterval == 0 {
			w.UpdateInterval = 5 * time.Minute
		}
		if w.UpdateInterval < 0 {
			errs = append(errs, fmt.Errorf("%s.update_interval: invalid value %s: use a positive duration such as 5m", at, w.UpdateInterval))
		}
		if len(w.Events) == 0 {
			w.Events = []string{"opened", "resolved"}
		}
		errs = append(errs, validateURL(at+".url", w.URL))
		errs = append(errs, oneSecret(at, "secret", w.SecretFile, w.SecretEnv, true))
		for j, ev := range w.Events {
			if !slices.Contains([]string{"opened", "updated", "resolved"}, ev) {
				errs = append(errs, fmt.Errorf("%s.events[%d]: unknown event %q: use opened, updated or resolved", at, j, ev))
			}
		}
		if w.MaxAttempts < 1 {
			errs = append(errs, fmt.Errorf("%s.max_attempts: invalid value %d: use 1 or more", at, w.MaxAttempts))
		}
		errs = append(errs, w.Match.validate(at+".match"))
	}
	return errors.Join(errs...)
}

func (s *SlackConfig) validate(at string) error {
	var errs []error
	hasToken := s.TokenFile != "" || s.TokenEnv != ""
	hasHook := s.WebhookURLFile != "" || s.WebhookURLEnv != ""
	switch {
	case hasToken && hasHook:
		errs = append(errs, fmt.Errorf("%s: token_file/token_env and webhook_url_file/webhook_url_env are mutually exclusive: set one credential", at))
	case hasToken:
		errs = append(errs, oneSecret(at, "token", s.TokenFile, s.TokenEnv, true))
		if s.Channel == "" {
			errs = append(errs, fmt.Errorf("%s.channel: missing: a bot token needs a default channel such as \"#alerts\"", at))
		}
	case hasHook:
		errs = append(errs, oneSecret(at, "webhook_url", s.WebhookURLFile, s.WebhookURLEnv, true))
		if len(s.Routes) > 0 {
			errs = append(errs, fmt.Errorf("%s.routes: routes need a bot token (token_file or token_env), because an incoming webhook posts to one fixed channel", at))
		}
	default:
		errs = append(errs, fmt.Errorf("%s: missing credential: set token_file or token_env (bot token), or webhook_url_file or webhook_url_env", at))
	}
	for i, r := range s.Routes {
		rat := fmt.Sprintf("%s.routes[%d]", at, i)
		if r.Channel == "" {
			errs = append(errs, fmt.Errorf("%s.channel: missing", rat))
		}
		errs = append(errs, r.Match.validate(rat+".match"))
	}
	for i := range s.Links {
		l := &s.Links[i]
		lat := fmt.Sprintf("%s.links[%d]", at, i)
		if l.Text == "" {
			errs = append(errs, fmt.Errorf("%s.text: missing", lat))
		}
		t, err := template.New(lat).Option("missingkey=error").Parse(l.URL)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.url: invalid template %q: %w", lat, l.URL, err))
			continue
		}
		l.tmpl = t
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"update_interval", s.UpdateInterval}, {"message_interval", s.MessageInterval}, {"retry_after", s.RetryAfter}, {"auth_check_interval", s.AuthCheckInterval}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s.%s: invalid value %s: use a positive duration", at, d.name, d.v))
		}
	}
	if s.APIURL != "" {
		errs = append(errs, validateURL(at+".api_url", s.APIURL))
	}
	return errors.Join(errs...)
}

func (m *Matcher) validate(at string) error {
	var errs []error
	for i, p := range m.Workloads {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s.workloads[%d]: invalid pattern %q: %w", at, i, p, err))
		}
	}
	return errors.Join(errs...)
}

// Matches reports whether the matcher selects the incident key.
func (m *Matcher) Matches(k incident.Key) bool {
	if len(m.Policies) > 0 && !slices.Contains(m.Policies, k.Policy) {
		return false
	}
	if len(m.Namespaces) > 0 && !slices.Contains(m.Namespaces, k.Namespace) {
		return false
	}
	if len(m.Workloads) > 0 {
		return slices.ContainsFunc(m.Workloads, func(p string) bool {
			ok, _ := path.Match(p, k.Workload)
			return ok
		})
	}
	return true
}

func validateURL(at, raw string) error {
	if raw == "" {
		return fmt.Errorf("%s: missing", at)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: invalid URL %q: use an absolute http or https URL", at, raw)
	}
	return nil
}

func oneSecret(at, name, file, env string, required bool) error {
	switch {
	case file != "" && env != "":
		return fmt.Errorf("%s: %s_file and %s_env are mutually exclusive: set one", at, name, name)
	case required && file == "" && env == "":
		return fmt.Errorf("%s.%s_file: missing: set %s_file or %s_env", at, name, name, name)
	}
	return nil
}

func loadSecret(at, name, file, env string) (secret.Value, error) {
	if file != "" {
		v, err := secret.FromFile(file)
		if err != nil {
			return v, fmt.Errorf("%s.%s_file: %w", at, name, err)
		}
		if v.IsZero() {
			return v, fmt.Errorf("%s.%s_file: file %s is empty", at, name, file)
		}
		return v, nil
	}
	v, err := secret.FromEnv(env)
	if err != nil {
		return v, fmt.Errorf("%s.%s_env: %w", at, name, err)
	}
	if v.IsZero() {
		return v, fmt.Errorf("%s.%s_env: environment variable %s is empty", at, name, env)
	}
	return v, nil
}
