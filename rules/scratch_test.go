package rules
import ("testing";"os";"bytes";"math/bits")
func TestScratchEval(t *testing.T) {
	data, _ := os.ReadFile("/tmp/aw/sample.log")
	lines := bytes.Split(data[:16<<20], []byte("\n"))
	m, _ := Default()
	cnt := map[string]int{}; ex := map[string]string{}
	for _, text := range lines {
		end, s := m.pf.first(text)
		if end < 0 { continue }
		set := make([]uint64, 2); pats := make([]uint64, 20)
		pf := m.pf
		for {
			if s >= pf.firstOut {
				st := s / pf.nclass
				for _, id := range pf.outIDs[pf.outStart[st]:pf.outStart[st+1]] {
					pats[id>>6] |= 1 << (id & 63)
					for _, ref := range m.refs[id] {
						if ref.exact != nil && !bytes.Equal(text[end-len(ref.exact):end], ref.exact) { continue }
						if ref.word && !wholeWord(text, end-int(pf.patLen[id]), end) { continue }
						set[ref.rule>>6] |= 1 << (ref.rule & 63)
					}
				}
			}
			if end >= len(text) { break }
			s = pf.trans[s+int32(pf.class[text[end]])]; end++
		}
		done := false
		for w := range set { for set[w] != 0 { b := bits.TrailingZeros64(set[w]); set[w] &^= 1 << b; if done { continue }
			r := &m.rules[w*64+b]; if !r.condsHold(pats) { continue }
			_, ok := r.match(&Line{Text: text}, text)
			k := r.ID; if ok { k += " (matched)"; done = true }
			if r.re != nil || r.excludeRe != nil { cnt[k]++; ex[k] = string(text) }
		}}
	}
	for k, v := range cnt { t.Logf("%7d %-40s %.120s", v, k, ex[k]) }
}
