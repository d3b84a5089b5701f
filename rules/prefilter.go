package rules

// prefilter is an Aho-Corasick automaton over ASCII-case-folded bytes,
// compiled into a full DFA over byte classes. Bytes that occur in no
// pattern share class 0, so the transition table stays small. States are
// numbered so that every state with an output is >= firstOut, which lets
// the scan loop test for a hit with one comparison.
type prefilter struct {
	class    [256]uint8
	nclass   int32
	trans    []int32 // trans[state*nclass+class] is the next state times nclass
	firstOut int32   // premultiplied id of the first state with an output
	outStart []int32 // per state (not premultiplied): outputs are outIDs[outStart[s]:outStart[s+1]]
	outIDs   []int32 // pattern ids
	patLen   []int32 // per pattern, its length in bytes
	maxLen   int     // length of the longest pattern, in bytes
}

func fold(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// newPrefilter builds the automaton for patterns, which must be non-empty.
// Pattern i is reported as id i.
func newPrefilter(patterns [][]byte) *prefilter {
	p := &prefilter{}

	// Byte classes: one per distinct folded byte that occurs in a pattern.
	var classOf [256]uint8
	n := 1
	for _, pat := range patterns {
		for _, b := range pat {
			f := fold(b)
			if classOf[f] == 0 {
				classOf[f] = uint8(n)
				n++
			}
		}
	}
	for b := range 256 {
		p.class[b] = classOf[fold(byte(b))]
	}
	p.nclass = int32(n)
	nc := n

	// Trie.
	type node struct {
		next []int32 // by class, -1 when absent
		fail int32
		out  []int32
	}
	newNode := func() node {
		next := make([]int32, nc)
		for i := range next {
			next[i] = -1
		}
		return node{next: next}
	}
	nodes := []node{newNode()}
	p.patLen = make([]int32, len(patterns))
	for id, pat := range patterns {
		s := int32(0)
		for _, b := range pat {
			c := p.class[b]
			if nodes[s].next[c] < 0 {
				nodes = append(nodes, newNode())
				nodes[s].next[c] = int32(len(nodes) - 1)
			}
			s = nodes[s].next[c]
		}
		nodes[s].out = append(nodes[s].out, int32(id))
		p.patLen[id] = int32(len(pat))
		p.maxLen = max(p.maxLen, len(pat))
	}

	// Failure links by breadth-first search, completing the DFA as we go.
	// bfs records the visiting order, so that shallow states, where a scan
	// spends most of its time, end up next to each other in the table.
	bfs := []int32{0}
	queue := make([]int32, 0, len(nodes))
	for c := range nc {
		t := nodes[0].next[c]
		if t < 0 {
			nodes[0].next[c] = 0
			continue
		}
		nodes[t].fail = 0
		queue = append(queue, t)
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		bfs = append(bfs, s)
		f := nodes[s].fail
		nodes[s].out = append(nodes[s].out, nodes[f].out...)
		for c := range nc {
			t := nodes[s].next[c]
			if t < 0 {
				nodes[s].next[c] = nodes[f].next[c]
				continue
			}
			nodes[t].fail = nodes[f].next[c]
			queue = append(queue, t)
		}
	}

	// Renumber: states without outputs first, each group in BFS order.
	order := make([]int32, 0, len(nodes))
	for _, s := range bfs {
		if len(nodes[s].out) == 0 {
			order = append(order, s)
		}
	}
	p.firstOut = int32(len(order)) * p.nclass
	for _, s := range bfs {
		if len(nodes[s].out) > 0 {
			order = append(order, s)
		}
	}
	newID := make([]int32, len(nodes))
	for i, s := range order {
		newID[s] = int32(i)
	}
	p.trans = make([]int32, len(nodes)*nc)
	p.outStart = make([]int32, len(nodes)+1)
	for i, s := range order {
		for c := range nc {
			p.trans[i*nc+c] = newID[nodes[s].next[c]] * p.nclass
		}
		p.outStart[i] = int32(len(p.outIDs))
		p.outIDs = append(p.outIDs, nodes[s].out...)
	}
	p.outStart[len(nodes)] = int32(len(p.outIDs))
	return p
}

// first returns the end offset (exclusive) of the first pattern occurrence
// in text, and the state reached there, or -1 when no pattern occurs.
func (p *prefilter) first(text []byte) (int, int32) {
	s := int32(0)
	trans, class, firstOut := p.trans, &p.class, p.firstOut
	for i, b := range text {
		s = trans[s+int32(class[b])]
		if s >= firstOut {
			return i + 1, s
		}
	}
	return -1, 0
}

// any reports whether a pattern occurs in text. It walks the two halves of
// a long text at once: a table-driven automaton waits on one memory load
// per byte, and two independent walks overlap those waits. The first half
// runs maxLen-1 bytes into the second, so no occurrence straddles the cut
// unseen.
func (p *prefilter) any(text []byte) bool {
	n := len(text)
	if n < 2*p.maxLen || n < 32 {
		end, _ := p.first(text)
		return end >= 0
	}
	mid := n / 2
	a := text[:mid+p.maxLen-1]
	b := text[mid:]
	trans, class, firstOut := p.trans, &p.class, p.firstOut

	var sa, sb int32
	both := min(len(a), len(b))
	for i := range both {
		sa = trans[sa+int32(class[a[i]])]
		sb = trans[sb+int32(class[b[i]])]
		if sa >= firstOut || sb >= firstOut {
			return true
		}
	}

	for _, c := range a[both:] {
		sa = trans[sa+int32(class[c])]
		if sa >= firstOut {
			return true
		}
	}
	for _, c := range b[both:] {
		sb = trans[sb+int32(class[c])]
		if sb >= firstOut {
			return true
		}
	}
	return false
}
