package alerting

import (
	"testing"

	"github.com/authwatch/authwatch/internal/secret"
)

func TestRedactorKeepsProse(t *testing.T) {
	r := &Redactor{}
	for _, in := range []string{
		"target town-builder-api-token: token in Secret town-builder/town-builder-secrets",
		"the secret: town-builder-secrets was patched",
		"password: changed, restart pending",
		"Authorization: denied for user town",
		"Token authentication-failed-for-everyone",
		"invalid token: token is expired",
		"token=expired api_key=none password=**** secret=NULL",
		`{"token_type":"Bearer","token":"none"}`,
		"would patch Secret town-builder/town-builder-secrets key API_TOKEN",
	} {
		if got := r.String(in); got != in {
			t.Errorf("String(%q)\n got %q\nwant it unchanged", in, got)
		}
	}
}

func TestRedactorMasksCredentials(t *testing.T) {
	r := &Redactor{}
	r.Add(secret.New("configured-webhook-key"))
	tests := []struct{ in, want string }{
		{"Authorization: Bearer abc.def-123_XYZ", "Authorization: Bearer ****"},
		{"Authorization: dG93bjpodW50ZXIy", "Authorization: ****"},
		{"login failed: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b rejected", "login failed: Token **** rejected"},
		{"sent Bearer tokenfromthevaultissuer upstream", "sent Bearer **** upstream"},
		{"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x end", "jwt **** end"},
		{"slack xoxb-111-222-testsecrettoken", "slack ****"},
		{"POST https://hooks.slack.com/services/T000/B000/XYZ 404", "POST https://hooks.slack.com/services/**** 404"},
		{"patch failed: password=hunter2-but-longer", "patch failed: password=****"},
		{"password=correct-horse-battery-staple", "password=****"},
		{"?access_token=abc123&page=2", "?access_token=****&page=2"},
		{`{"password":"hunter2-but-longer","access_token":"tok_live_abcdefghijklmnop"}`, `{"password":"****","access_token":"****"}`},
		{"password: hunter2 rejected", "password: **** rejected"},
		{"api-token: 9944b09199c62bcf9418", "api-token: ****"},
		{"client_secret: Zm9vYmFyYmF6", "client_secret: ****"},
		{"hook key configured-webhook-key in use", "hook key **** in use"},
	}
	for _, tc := range tests {
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("String(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
