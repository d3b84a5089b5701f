package rules
import ("testing";"os";"bytes")
func BenchmarkScratchMask(b *testing.B) {
	data, _ := os.ReadFile("/tmp/aw/sample.log")
	lines := bytes.Split(data[:16<<20], []byte("\n"))
	m, _ := Default()
	var hits [][]byte
	for _, l := range lines { if len(m.Match(&Line{Text: l}, nil)) > 0 { hits = append(hits, l) } }
	b.Logf("%d hit lines", len(hits))
	for b.Loop() { for _, l := range hits { Mask(l) } }
}
