package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/authwatch/authwatch/rules"
	"github.com/authwatch/authwatch/rules/logfile"
)

type scanFlags struct {
	ruleFlags
	format        string
	maxLineBytes  int
	maxPrintBytes int
	categories    []string
	output        string
	summary       bool
	progress      string
}

func newScanCmd() *cobra.Command {
	f := &scanFlags{}
	cmd := &cobra.Command{
		Use:   "scan [FILE|-]...",
		Short: "Report authentication failures and token expiry in log files",
		Long: "Scan reads log files (standard input when none is given or for \"-\") and prints\n" +
			"one line per line that a rule matches, with secrets masked, then a summary on\n" +
			"standard error. It reads plain lines, `kubectl logs --timestamps` and `--prefix`\n" +
			"output, and CRI container log files, rejoining partial records; gzip files are\n" +
			"decompressed. Exit status: 0 when a line matched, 1 when none did, 2 on a usage\n" +
			"or input error.",
		Example: "  authwatch scan examples/town-builder.log\n" +
			"  kubectl logs --timestamps --prefix -l app=town-builder | authwatch scan\n" +
			"  authwatch scan -o json /var/log/pods/*/*/0.log.*.gz",
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScan(cmd, f, args)
		},
	}
	fl := cmd.Flags()
	f.ruleFlags.register(fl)
	fl.StringVar(&f.format, "format", "auto", "input format: auto, plain, timestamps, prefix, prefix-timestamps or cri (auto decides per file from its first line)")
	fl.IntVar(&f.maxLineBytes, "max-line-bytes", logfile.DefaultMaxLineBytes, "longest line kept, in bytes; the rest of a longer line is dropped and the line counted as truncated")
	fl.IntVar(&f.maxPrintBytes, "max-print-bytes", 4096, "longest line text printed, in bytes, after masking; 0 prints whole lines")
	fl.StringSliceVar(&f.categories, "category", []string{"auth_failure"}, "categories to report: auth_failure (includes token_expired), token_expired, error, or all")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json (one object per match)")
	fl.BoolVar(&f.summary, "summary", true, "print a summary by category and rule on standard error")
	fl.StringVar(&f.progress, "progress", "auto", "show progress on standard error: auto (when it is a terminal), always or never")
	return cmd
}

// scanState holds the output and the counts of one scan over its inputs.
type scanState struct {
	m          *rules.Matcher
	categories []rules.Category // empty means all
	json       bool
	maxPrint   int
	out        *bufio.Writer
	stderr     io.Writer
	progress   *progress

	inputs     int
	lines      int
	truncated  int
	malformed  int
	matches    int
	byCategory map[rules.Category]int
	byRule     map[string]int
}

func runScan(cmd *cobra.Command, f *scanFlags, args []string) error {
	format, err := logfile.ParseFormat(f.format)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if f.output != "text" && f.output != "json" {
		return &exitError{code: exitUsage, err: fmt.Errorf("invalid --output %q; use text or json", f.output)}
	}
	if f.maxPrintBytes < 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("invalid --max-print-bytes %d; use 0 for no limit or a positive number of bytes", f.maxPrintBytes)}
	}
	if f.maxLineBytes <= 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("invalid --max-line-bytes %d; use a positive number of bytes", f.maxLineBytes)}
	}
	cats, err := parseCategories(f.categories)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	m, err := f.ruleFlags.compile()
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	stderr := cmd.ErrOrStderr()
	showProgress, err := progressEnabled(f.progress, stderr)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}

	st := &scanState{
		m:          m,
		categories: cats,
		json:       f.output == "json",
		maxPrint:   f.maxPrintBytes,
		out:        bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10),
		stderr:     stderr,
		byCategory: map[rules.Category]int{},
		byRule:     map[string]int{},
	}
	if showProgress {
		st.progress = &progress{w: stderr, start: time.Now(), flushOut: st.flushOut}
		// Match lines clear the status line first, because on a shared
		// terminal they would otherwise continue it.
		st.out.Reset(&statusClearingWriter{w: cmd.OutOrStdout(), p: st.progress})
	}
	if len(args) == 0 {
		args = []string{"-"}
	}
	opts := logfile.Options{Format: format, MaxLineBytes: f.maxLineBytes}
	failed := false
	for _, name := range args {
		if err := st.scanInput(cmd, name, opts); err != nil {
			st.flushOut()
			st.progress.clear()
			fmt.Fprintf(stderr, "authwatch: scan: %v\n", err)
			failed = true
		}
		if err := cmd.Context().Err(); err != nil {
			st.flushOut()
			st.progress.clear()
			fmt.Fprintln(stderr, "authwatch: scan: interrupted; the summary covers the lines read so far")
			failed = true
			break
		}
	}
	if err := st.out.Flush(); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("write output: %w", err)}
	}
	st.progress.clear()
	if f.summary {
		st.writeSummary(f.maxLineBytes)
	}
	switch {
	case failed:
		return &exitError{code: exitUsage}
	case st.matches == 0:
		return &exitError{code: exitNotFound}
	}
	return nil
}

func parseCategories(names []string) ([]rules.Category, error) {
	var out []rules.Category
	for _, n := range names {
		if n == "all" {
			return nil, nil
		}
		c, ok := rules.ParseCategory(n)
		if !ok {
			return nil, fmt.Errorf("invalid --category %q; use auth_failure, token_expired, error or all", n)
		}
		out = append(out, c)
	}
	return out, nil
}

func (st *scanState) selected(c rules.Category) bool {
	if len(st.categories) == 0 {
		return true
	}
	for _, want := range st.categories {
		if c.Is(want) {
			return true
		}
	}
	return false
}

// scanInput scans one file, or standard input for "-".
func (st *scanState) scanInput(cmd *cobra.Command, name string, opts logfile.Options) error {
	var in io.Reader
	display := name
	if name == "-" {
		in = cmd.InOrStdin()
		display = "(standard input)"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	counter := &countingReader{r: in}
	r, err := logfile.NewReader(counter, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", display, err)
	}
	defer r.Close()
	st.inputs++

	lines := st.scanLines(cmd.Context(), r, display, counter)
	s := r.Stats()
	st.lines += lines
	st.truncated += s.Truncated
	st.malformed += s.Malformed
	if err := r.Err(); err != nil {
		return fmt.Errorf("%s: line %d: %w", display, r.LineNumber()+1, err)
	}
	return nil
}

// scanChunkBytes is the text that one chunk of lines carries to a worker.
// Chunks spread the cost of handing work between goroutines over many
// lines.
const scanChunkBytes = 256 << 10

// scanChunkLines bounds the lines of one chunk, so that a chunk of short
// lines does not hold back the output for long.
const scanChunkLines = 4096

// scanChunk is a run of consecutive lines of one input, copied out of the
// Reader's buffers, and the output rendered for them.
type scanChunk struct {
	text  []byte
	ends  []int        // ends[i] is where line i ends in text
	lines []rules.Line // the lines, with Text unset until matched
	nums  []int        // physical line numbers, as Reader.LineNumber
	// out is the rendered output of the lines that matched, in input
	// order, and matched lists their rules for the summary.
	out     bytes.Buffer
	matched []matchedRule
	done    chan struct{} // closed when out is complete
}

type matchedRule struct {
	rule     string
	category rules.Category
}

func (c *scanChunk) add(l *rules.Line, lineNo int) {
	c.text = append(c.text, l.Text...)
	c.ends = append(c.ends, len(c.text))
	c.lines = append(c.lines, *l)
	c.lines[len(c.lines)-1].Text = nil
	c.nums = append(c.nums, lineNo)
}

func (c *scanChunk) full() bool {
	return len(c.text) >= scanChunkBytes || len(c.lines) >= scanChunkLines
}

func (c *scanChunk) reset() {
	c.text, c.ends, c.lines, c.nums = c.text[:0], c.ends[:0], c.lines[:0], c.nums[:0]
	c.out.Reset()
	c.matched = c.matched[:0]
	c.done = make(chan struct{})
}

// scanLines reads r to the end, or until ctx is done, and reports the
// matches in input order. It returns the number of lines read.
//
// One goroutine reads lines and copies them into chunks, GOMAXPROCS
// workers match chunks and render their output, and the calling goroutine
// writes that output in input order. At most 3×workers+1 chunks exist at
// a time, so memory stays below that many times scanChunkBytes plus the
// longest line.
func (st *scanState) scanLines(ctx context.Context, r *logfile.Reader, display string, counter *countingReader) int {
	workers := runtime.GOMAXPROCS(0)
	free := make(chan *scanChunk, 3*workers+1)
	for range cap(free) {
		c := &scanChunk{}
		c.reset()
		free <- c
	}
	work := make(chan *scanChunk, workers)
	pending := make(chan *scanChunk, 2*workers)

	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(pending)
		defer close(work)
		var line rules.Line
		c := <-free
		n := 0
		for r.Next(&line) {
			c.add(&line, r.LineNumber())
			if c.full() {
				pending <- c
				work <- c
				c = <-free
			}
			n++
			if n&0xffff == 0 && ctx.Err() != nil {
				break
			}
		}
		pending <- c
		work <- c
	})
	for range workers {
		wg.Go(func() {
			for c := range work {
				st.matchChunk(display, c)
			}
		})
	}

	lines := 0
	for c := range pending {
		<-c.done
		_, _ = st.out.Write(c.out.Bytes()) // Flush reports a write error
		for _, m := range c.matched {
			st.matches++
			st.byCategory[m.category]++
			st.byRule[m.rule]++
		}
		lines += len(c.lines)
		st.progress.update(display, counter.n.Load(), st.lines+lines, st.matches)
		c.reset()
		free <- c
	}
	wg.Wait()
	return lines
}

// matchChunk matches the lines of c and renders the selected matches into
// c.out. Workers call it concurrently on different chunks.
func (st *scanState) matchChunk(source string, c *scanChunk) {
	defer close(c.done)
	var enc *json.Encoder
	if st.json {
		enc = json.NewEncoder(&c.out)
		enc.SetEscapeHTML(false)
	}
	var matches []rules.Match
	start := 0
	for i := range c.lines {
		l := &c.lines[i]
		l.Text = c.text[start:c.ends[i]]
		start = c.ends[i]
		matches = st.m.Match(l, matches[:0])
		if len(matches) == 0 || !st.selected(matches[0].Category) {
			continue
		}
		m := &matches[0]
		c.matched = append(c.matched, matchedRule{rule: m.RuleID, category: m.Category})
		if st.json {
			st.writeJSON(enc, source, c.nums[i], m)
		} else {
			st.writeText(&c.out, source, c.nums[i], m)
		}
	}
}

// writeText writes "<source>:<line>: [<time>] [pod/<pod>/<container>]
// <category>[(<severity>)] <rule>: <masked text>".
func (st *scanState) writeText(w *bytes.Buffer, source string, lineNo int, m *rules.Match) {
	w.WriteString(source)
	w.WriteByte(':')
	w.WriteString(strconv.Itoa(lineNo))
	w.WriteString(": ")
	if !m.Line.Time.IsZero() {
		w.WriteString(m.Line.Time.UTC().Format(time.RFC3339Nano))
		w.WriteByte(' ')
	}
	if m.Line.Source.Pod != "" {
		fmt.Fprintf(w, "pod/%s/%s ", m.Line.Source.Pod, m.Line.Source.Container)
	}
	w.WriteString(m.Category.String())
	if m.Severity != rules.SeverityError {
		w.WriteString("(" + m.Severity.String() + ")")
	}
	w.WriteByte(' ')
	w.WriteString(m.RuleID)
	w.WriteString(": ")
	text, cut := st.printable(m.Line.Text)
	writeEscaped(w, text)
	if cut > 0 {
		fmt.Fprintf(w, " [%d more bytes]", cut)
	}
	if m.Line.Truncated {
		w.WriteString(" [truncated]")
	}
	w.WriteByte('\n')
}

// printable masks text and then cuts it to the print limit, so that a cut
// never splits a secret before masking could recognise it. cut is the
// number of masked bytes left out.
func (st *scanState) printable(text []byte) (out []byte, cut int) {
	out = rules.Mask(text)
	if st.maxPrint > 0 && len(out) > st.maxPrint {
		return out[:st.maxPrint], len(out) - st.maxPrint
	}
	return out, 0
}

// writeEscaped writes text with control bytes other than tab escaped, so
// that a log line cannot move the cursor or recolour a terminal.
func writeEscaped(w *bytes.Buffer, text []byte) {
	for _, b := range text {
		if b < 0x20 && b != '\t' || b == 0x7f {
			fmt.Fprintf(w, `\x%02x`, b)
			continue
		}
		w.WriteByte(b)
	}
}

type jsonMatch struct {
	Source    string            `json:"source"`
	Line      int               `json:"line"`
	Time      *time.Time        `json:"time,omitempty"`
	Pod       string            `json:"pod,omitempty"`
	Container string            `json:"container,omitempty"`
	Rule      string            `json:"rule"`
	Category  string            `json:"category"`
	Severity  string            `json:"severity"`
	Text      string            `json:"text"`
	CutBytes  int               `json:"cut_bytes,omitempty"` // bytes of text not printed (--max-print-bytes)
	Truncated bool              `json:"truncated,omitempty"` // the line was longer than --max-line-bytes
	Fields    map[string]string `json:"fields,omitempty"`
}

func (st *scanState) writeJSON(enc *json.Encoder, source string, lineNo int, m *rules.Match) {
	jm := jsonMatch{
		Source:    source,
		Line:      lineNo,
		Pod:       m.Line.Source.Pod,
		Container: m.Line.Source.Container,
		Rule:      m.RuleID,
		Category:  m.Category.String(),
		Severity:  m.Severity.String(),
		Truncated: m.Line.Truncated,
		Fields:    m.Fields,
	}
	text, cut := st.printable(m.Line.Text)
	jm.Text = string(text)
	jm.CutBytes = cut
	if !m.Line.Time.IsZero() {
		t := m.Line.Time.UTC()
		jm.Time = &t
	}
	// jsonMatch holds only strings, numbers and a time, and a
	// bytes.Buffer takes every write, so Encode cannot fail.
	_ = enc.Encode(jm)
}

// flushOut writes the buffered match lines before a message goes to
// standard error. The buffer holds whole lines only between chunks, but
// a full buffer is written out wherever it ends, so without this flush a
// message could land inside a match line when both streams share a file
// (2>&1). A write error stays in st.out, and the final Flush returns it.
func (st *scanState) flushOut() {
	_ = st.out.Flush()
}

func (st *scanState) writeSummary(maxLineBytes int) {
	w := st.stderr
	fmt.Fprintf(w, "authwatch scan: %d %s, %d lines, %d %s\n",
		st.inputs, plural(st.inputs, "input", "inputs"), st.lines, st.matches, plural(st.matches, "match", "matches"))
	if st.truncated > 0 {
		fmt.Fprintf(w, "  %d %s cut at %d bytes (see --max-line-bytes)\n", st.truncated, plural(st.truncated, "line", "lines"), maxLineBytes)
	}
	if st.malformed > 0 {
		fmt.Fprintf(w, "  %d %s without the timestamp or header of the input format, matched as plain text\n", st.malformed, plural(st.malformed, "line", "lines"))
	}
	if st.matches == 0 {
		return
	}

	cats := make([]string, 0, len(st.byCategory))
	for c, n := range st.byCategory {
		cats = append(cats, fmt.Sprintf("%s %d", c, n))
	}
	slices.Sort(cats)
	fmt.Fprintf(w, "  by category: %s\n", strings.Join(cats, ", "))

	type count struct {
		rule string
		n    int
	}
	var byRule []count
	for r, n := range st.byRule {
		byRule = append(byRule, count{r, n})
	}
	slices.SortFunc(byRule, func(a, b count) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.rule, b.rule))
	})
	parts := make([]string, len(byRule))
	for i, c := range byRule {
		parts[i] = fmt.Sprintf("%s %d", c.rule, c.n)
	}
	fmt.Fprintf(w, "  by rule: %s\n", strings.Join(parts, ", "))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// countingReader counts the bytes read through it. The count may be read
// from another goroutine.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progress writes a status line on a terminal at most twice a second.
// A nil *progress does nothing.
type progress struct {
	w     io.Writer
	start time.Time
	last  time.Time
	shown bool
	// flushOut, if set, runs before each status line is drawn, so the
	// status line never splits a match line on a shared terminal.
	flushOut func()
}

// statusClearingWriter clears the progress status line before each write
// of match lines.
type statusClearingWriter struct {
	w io.Writer
	p *progress
}

func (c *statusClearingWriter) Write(b []byte) (int, error) {
	c.p.clear()
	return c.w.Write(b)
}

func progressEnabled(mode string, stderr io.Writer) (bool, error) {
	switch mode {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto":
		f, ok := stderr.(*os.File)
		if !ok {
			return false, nil
		}
		fi, err := f.Stat()
		return err == nil && fi.Mode()&os.ModeCharDevice != 0, nil
	}
	return false, fmt.Errorf("invalid --progress %q; use auto, always or never", mode)
}

func (p *progress) update(input string, bytesRead int64, lines, matches int) {
	if p == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 500*time.Millisecond {
		return
	}
	p.last = now
	if p.flushOut != nil {
		p.flushOut()
	}
	p.shown = true
	mib := float64(bytesRead) / (1 << 20)
	rate := mib / max(now.Sub(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r\033[K%s: %.0f MiB read (%.0f MiB/s), %d lines, %d matches", input, mib, rate, lines, matches)
}

func (p *progress) clear() {
	if p == nil || !p.shown {
		return
	}
	fmt.Fprint(p.w, "\r\033[K")
	p.shown = false
}
