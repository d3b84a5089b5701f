// Package logfile reads log lines from files and streams in the shapes that
// Kubernetes produces: plain lines, `kubectl logs --timestamps` and
// `--prefix` output, and CRI container log files with partial records.
// It caps line length, strips a trailing "\r", reads gzip transparently and
// turns each record into a rules.Line for the matcher.
package logfile

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/authwatch/authwatch/rules"
)

// DefaultMaxLineBytes is the default cap on the length of a line.
const DefaultMaxLineBytes = 1 << 20

// headerRoom is how much longer than the cap a physical line may be. It
// leaves room for a kubectl prefix (a pod name of up to 253 bytes and a
// container name of up to 63), a timestamp and a CRI header, so that they
// never count against the text.
const headerRoom = 512

// Format is the shape of the lines in one input.
type Format uint8

// Formats. Auto decides from the first non-empty line of each input.
const (
	Auto       Format = iota
	Plain             // the log line as the application wrote it
	Timestamps        // kubectl logs --timestamps: "<RFC3339Nano> <line>"
	CRI               // CRI log file: "<RFC3339Nano> stdout|stderr P|F <line>"
	Prefix            // kubectl logs --prefix: "[pod/<pod>/<container>] <line>"
	// PrefixTimestamps is kubectl logs --prefix --timestamps:
	// "[pod/<pod>/<container>] <RFC3339Nano> <line>".
	PrefixTimestamps
)

var formatNames = [...]string{"auto", "plain", "timestamps", "cri", "prefix", "prefix-timestamps"}

// String returns the name that ParseFormat accepts.
func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return "unknown"
}

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	for i, name := range formatNames {
		if name == s {
			return Format(i), nil
		}
	}
	return Auto, fmt.Errorf("logfile: unknown format %q; valid formats are auto, plain, timestamps, cri, prefix, prefix-timestamps", s)
}

// Options configure a Reader.
type Options struct {
	Format Format
	// MaxLineBytes caps the text of a line, after CRI partial records are
	// joined. The rest of the line is read and dropped, and the line is
	// marked Truncated. Zero means DefaultMaxLineBytes.
	MaxLineBytes int
}

// Stats counts what a Reader read.
type Stats struct {
	Lines     int // records returned
	Truncated int // records cut at MaxLineBytes
	// Malformed counts lines that lacked the timestamp or CRI header of
	// the input's format. They are returned as plain lines, so nothing is
	// skipped unseen.
	Malformed int
}

// Reader returns the records of one input. It is not safe for concurrent
// use.
type Reader struct {
	br      *bufio.Reader
	gz      *gzip.Reader
	format  Format
	max     int
	lineNo  int // physical lines read
	recLine int // physical line where the last record ended
	long    []byte
	partial [2][]byte // CRI partial records per stream: stdout, stderr
	partTr  [2]bool   // the partial record was truncated
	stats   Stats
	err     error
	// The last kubectl prefix seen and the strings made from it, so that
	// a run of lines from one container allocates once.
	lastPrefix []byte
	pod, ctr   string
}

// NewReader returns a Reader of r. When r starts with the gzip magic
// bytes, the Reader decompresses it.
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	rd := &Reader{format: opts.Format, max: opts.MaxLineBytes}
	if rd.max <= 0 {
		rd.max = DefaultMaxLineBytes
	}
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("logfile: gzip: %w", err)
		}
		rd.gz = gz
		br = bufio.NewReaderSize(gz, 64<<10)
	}
	rd.br = br
	return rd, nil
}

// Stats returns the counts so far.
func (r *Reader) Stats() Stats { return r.stats }

// Err returns the first read error other than io.EOF.
func (r *Reader) Err() error { return r.err }

// LineNumber returns the physical line (1-based) on which the last record
// that Next returned ended.
func (r *Reader) LineNumber() int { return r.recLine }

// Format returns the format in use; for Auto it is Auto until the first
// non-empty line has been read.
func (r *Reader) Format() Format { return r.format }

// Next reads the next record into l. l.Text points into the Reader's
// buffers and is valid until the following call to Next. Next returns
// false at the end of the input or on an error (see Err).
func (r *Reader) Next(l *rules.Line) bool {
	for {
		raw, truncated, ok := r.readLine()
		if !ok {
			return r.flushPartial(l)
		}
		if r.format == Auto {
			if len(bytes.TrimSpace(raw)) == 0 {
				r.emit(l, raw, time.Time{}, truncated)
				return true
			}
			r.format = detect(raw)
		}
		switch r.format {
		case Prefix, PrefixTimestamps:
			pod, ctr, rest, ok := r.splitPrefix(raw)
			if !ok {
				l.Source.Pod, l.Source.Container = "", ""
				r.stats.Malformed++
				r.emit(l, raw, time.Time{}, truncated)
				return true
			}
			l.Source.Pod, l.Source.Container = pod, ctr
			if r.format == Prefix {
				r.emit(l, rest, time.Time{}, truncated)
				return true
			}
			ts, text, ok := splitTimestamp(rest)
			if !ok {
				r.stats.Malformed++
				r.emit(l, rest, time.Time{}, truncated)
				return true
			}
			r.emit(l, text, ts, truncated)
			return true
		case Timestamps:
			ts, rest, ok := splitTimestamp(raw)
			if !ok {
				r.stats.Malformed++
				r.emit(l, raw, time.Time{}, truncated)
				return true
			}
			r.emit(l, rest, ts, truncated)
			return true
		case CRI:
			if r.cri(l, raw, truncated) {
				return true
			}
		default:
			r.emit(l, raw, time.Time{}, truncated)
			return true
		}
	}
}

func (r *Reader) emit(l *rules.Line, text []byte, ts time.Time, truncated bool) {
	n := len(text)
	if n > 0 && text[n-1] == '\r' {
		text = text[:n-1]
	}
	if len(text) > r.max {
		text = text[:r.max]
		truncated = true
	}
	l.Text = text
	l.Time = ts
	l.Truncated = truncated
	r.stats.Lines++
	if truncated {
		r.stats.Truncated++
	}
	r.recLine = r.lineNo
}

// cri handles one physical line of a CRI log file. It returns true when it
// filled l with a complete record.
func (r *Reader) cri(l *rules.Line, raw []byte, truncated bool) bool {
	ts, stream, full, text, ok := splitCRI(raw)
	if !ok {
		r.stats.Malformed++
		r.emit(l, raw, time.Time{}, truncated)
		return true
	}
	p := &r.partial[stream]
	if len(*p) == 0 && !r.partTr[stream] && full {
		r.emit(l, text, ts, truncated)
		return true
	}
	room := r.max - len(*p)
	if len(text) > room {
		text = text[:max(room, 0)]
		truncated = true
	}
	*p = append(*p, text...)
	r.partTr[stream] = r.partTr[stream] || truncated
	if !full {
		return false
	}
	r.emit(l, *p, ts, r.partTr[stream])
	*p = (*p)[:0]
	r.partTr[stream] = false
	return true
}

// flushPartial returns a CRI partial record left open at the end of the
// input, so that it is not lost.
func (r *Reader) flushPartial(l *rules.Line) bool {
	for s := range r.partial {
		if len(r.partial[s]) > 0 || r.partTr[s] {
			r.emit(l, r.partial[s], time.Time{}, r.partTr[s])
			r.partial[s] = r.partial[s][:0]
			r.partTr[s] = false
			return true
		}
	}
	return false
}

// readLine returns the next physical line without its "\n", capped at
// r.max+headerRoom bytes.
func (r *Reader) readLine() (line []byte, truncated, ok bool) {
	if r.err != nil {
		return nil, false, false
	}
	limit := r.max + headerRoom
	b, err := r.br.ReadSlice('\n')
	if err == nil || (errors.Is(err, io.EOF) && len(b) > 0) {
		r.lineNo++
		b = bytes.TrimSuffix(b, []byte{'\n'})
		if len(b) > limit {
			return b[:limit], true, true
		}
		return b, false, true
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		if !errors.Is(err, io.EOF) {
			r.err = err
		}
		return nil, false, false
	}
	// A line longer than the buffer: collect up to r.max bytes, drop the rest.
	r.long = append(r.long[:0], b[:min(len(b), limit)]...)
	truncated = len(b) > limit
	for {
		b, err = r.br.ReadSlice('\n')
		b = bytes.TrimSuffix(b, []byte{'\n'})
		if room := limit - len(r.long); room > 0 {
			r.long = append(r.long, b[:min(len(b), room)]...)
			truncated = truncated || len(b) > room
		} else if len(b) > 0 {
			truncated = true
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			r.err = err
			return nil, false, false
		}
		r.lineNo++
		return r.long, truncated, true
	}
}

// detect picks the format of an input from one non-empty line.
func detect(line []byte) Format {
	if _, _, rest, ok := cutPrefix(line); ok {
		if _, _, ok := splitTimestamp(rest); ok {
			return PrefixTimestamps
		}
		return Prefix
	}
	if _, _, _, _, ok := splitCRI(line); ok {
		return CRI
	}
	if _, _, ok := splitTimestamp(line); ok {
		return Timestamps
	}
	return Plain
}

// splitTimestamp splits "<RFC3339Nano> <rest>".
func splitTimestamp(line []byte) (time.Time, []byte, bool) {
	sp := bytes.IndexByte(line, ' ')
	if sp < len("2006-01-02T15:04:05Z") || sp > len("2006-01-02T15:04:05.999999999-07:00") {
		return time.Time{}, nil, false
	}
	if c := line[0]; c < '0' || c > '9' {
		return time.Time{}, nil, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(line[:sp]))
	if err != nil {
		return time.Time{}, nil, false
	}
	return ts, line[sp+1:], true
}

// splitCRI splits "<RFC3339Nano> <stdout|stderr> <P|F> <text>". stream is
// 0 for stdout and 1 for stderr.
func splitCRI(line []byte) (ts time.Time, stream int, full bool, text []byte, ok bool) {
	ts, rest, ok := splitTimestamp(line)
	if !ok {
		return
	}
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		stream = 0
	case bytes.HasPrefix(rest, []byte("stderr ")):
		stream = 1
	default:
		return ts, 0, false, nil, false
	}
	rest = rest[len("stdout "):]
	if len(rest) < 1 || (rest[0] != 'P' && rest[0] != 'F') || (len(rest) > 1 && rest[1] != ' ') {
		return ts, 0, false, nil, false
	}
	full = rest[0] == 'F'
	if len(rest) > 2 {
		text = rest[2:]
	} else {
		text = rest[len(rest):]
	}
	return ts, stream, full, text, true
}

// Close releases the gzip reader, if any. It does not close the
// underlying reader.
func (r *Reader) Close() error {
	if r.gz != nil {
		return r.gz.Close()
	}
	return nil
}

// cutPrefix splits "[pod/<pod>/<container>] <rest>" as kubectl logs
// --prefix writes it.
func cutPrefix(line []byte) (pod, ctr, rest []byte, ok bool) {
	if !bytes.HasPrefix(line, []byte("[pod/")) {
		return nil, nil, nil, false
	}
	end := bytes.Index(line, []byte("] "))
	if end < 0 {
		return nil, nil, nil, false
	}
	inner := line[len("[pod/"):end]
	slash := bytes.IndexByte(inner, '/')
	if slash <= 0 || slash == len(inner)-1 || bytes.ContainsAny(inner, " ]") {
		return nil, nil, nil, false
	}
	return inner[:slash], inner[slash+1:], line[end+2:], true
}

func (r *Reader) splitPrefix(line []byte) (pod, ctr string, rest []byte, ok bool) {
	p, c, rest, ok := cutPrefix(line)
	if !ok {
		return "", "", nil, false
	}
	prefix := line[:len(line)-len(rest)]
	if !bytes.Equal(prefix, r.lastPrefix) {
		r.lastPrefix = append(r.lastPrefix[:0], prefix...)
		r.pod, r.ctr = string(p), string(c)
	}
	return r.pod, r.ctr, rest, true
}
