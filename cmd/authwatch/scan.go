package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
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
	enc        *json.Encoder // writes to out
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
	st.enc = json.NewEncoder(st.out)
	st.enc.SetEscapeHTML(false)
	if showProgress {
		st.progress = &progress{w: stderr, start: time.Now()}
	}
	if len(args) == 0 {
		args = []string{"-"}
	}
	opts := logfile.Options{Format: format, MaxLineBytes: f.maxLineBytes}
	failed := false
	for _, name := range args {
		if err := st.scanInput(cmd, name, opts); err != nil {
			st.progress.clear()
			fmt.Fprintf(stderr, "authwatch: scan: %v\n", err)
			failed = true
		}
		if err := cmd.Context().Err(); err != nil {
			st.progress.clear()
			fmt.Fprintln(stderr, "authwatch: scan: interrupted; the summary covers the lines read so far")
			failed = true
			break
		}
	}
	st.progress.clear()
	if err := st.out.Flush(); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("write output: %w", err)}
	}
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

	ctx := cmd.Context()
	var line rules.Line
	var matches []rules.Match
	n := 0
	for r.Next(&line) {
		matches = st.m.Match(&line, matches[:0])
		if len(matches) > 0 && st.selected(matches[0].Category) {
			st.report(display, r.LineNumber(), &matches[0])
		}
		n++
		if n&0xffff == 0 {
			if ctx.Err() != nil {
				break
			}
			st.progress.update(display, counter.n, st.lines+n, st.matches)
		}
	}
	s := r.Stats()
	st.lines += s.Lines
	st.truncated += s.Truncated
	st.malformed += s.Malformed
	if err := r.Err(); err != nil {
		return fmt.Errorf("%s: line %d: %w", display, r.LineNumber()+1, err)
	}
	return nil
}

func (st *scanState) report(source string, lineNo int, m *rules.Match) {
	st.matches++
	st.byCategory[m.Category]++
	st.byRule[m.RuleID]++
	if st.json {
		st.writeJSON(source, lineNo, m)
		return
	}
	st.writeText(source, lineNo, m)
}

// writeText writes "<source>:<line>: [<time>] [pod/<pod>/<container>]
// <category>[(<severity>)] <rule>: <masked text>".
func (st *scanState) writeText(source string, lineNo int, m *rules.Match) {
	w := st.out
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
func writeEscaped(w *bufio.Writer, text []byte) {
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

func (st *scanState) writeJSON(source string, lineNo int, m *rules.Match) {
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
	// jsonMatch holds only strings, numbers and a time, so Encode can fail
	// only on a write error, and Flush reports that at the end.
	_ = st.enc.Encode(jm)
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

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// progress writes a status line on a terminal at most twice a second.
// A nil *progress does nothing.
type progress struct {
	w     io.Writer
	start time.Time
	last  time.Time
	shown bool
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
