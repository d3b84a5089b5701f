package rules

import (
	"fmt"
	"testing"
)

// benchLines are ordinary lines that match no rule, in the proportions of
// a busy service: access logs, JSON and plain application lines.
var benchLines = []string{
	`10.0.3.7 - - [02/May/2026:11:00:11 +0000] "GET /api/v1/towns/17/houses?page=2 HTTP/1.1" 200 5123 "-" "python-requests/2.32.3"`,
	`{"level":"info","ts":"2026-05-02T11:12:02.000Z","caller":"server/http.go:41","msg":"request served","method":"GET","path":"/api/v1/towns","status":200,"bytes":401,"duration":0.0031}`,
	`2026-05-02 11:00:01,004 INFO town_builder.worker: built 12 houses in town 17 (request_id=401f3a9c-9b1d-4f0e)`,
	`time="2026-05-02T11:12:05Z" level=info msg="cache refreshed" entries=4012 took=12ms`,
	`[2026-05-02T11:07:13.441Z] "GET /healthz HTTP/1.1" 200 - via_upstream - "-" 0 2 1 1 "-" "kube-probe/1.31" "6f1c2d3e" "10.0.0.1:8080"`,
}

// BenchmarkMatchNoMatch measures the default pack on lines that match
// nothing; run with -benchmem to see 0 allocs/op.
func BenchmarkMatchNoMatch(b *testing.B) {
	m, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	for i, text := range benchLines {
		line := &Line{Text: []byte(text)}
		b.Run(fmt.Sprintf("line%d", i), func(b *testing.B) {
			dst := make([]Match, 0, 4)
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if got := m.Match(line, dst[:0]); len(got) != 0 {
					b.Fatalf("matched %s", got[0].RuleID)
				}
			}
		})
	}
}

// BenchmarkMatchHit measures lines that match, which copy the text.
func BenchmarkMatchHit(b *testing.B) {
	m, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	line := &Line{Text: []byte(`2026-05-02 11:00:05,877 ERROR town_builder.client: GET /api/towns/3/houses/ -> 401 {"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is expired"}]}`)}
	dst := make([]Match, 0, 4)
	b.ReportAllocs()
	b.SetBytes(int64(len(line.Text)))
	for b.Loop() {
		if got := m.Match(line, dst[:0]); len(got) != 1 {
			b.Fatal("no match")
		}
	}
}

func BenchmarkCompileDefault(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Default(); err != nil {
			b.Fatal(err)
		}
	}
}
