package watcher

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"time"
)

// rawLine is one line of a timestamped pods/log stream.
type rawLine struct {
	time      time.Time
	text      []byte // valid until the next call to next
	truncated bool
	// noTimestamp marks text the kubelet injected into the stream (an
	// error message); it is not a container line.
	noTimestamp bool
	// partial marks the bytes after the last newline at a clean end of
	// the stream.
	partial bool
}

// lineReader splits a stream into lines of at most max bytes of text
// (after the timestamp), stripping "\n" and one trailing "\r". Longer
// lines are truncated and the rest is skipped up to the next newline.
type lineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
}

// maxTimestampLen bounds an RFC 3339 timestamp with nanoseconds and a
// numeric zone, plus the separating space.
const maxTimestampLen = 36

// readBufferSize is the read buffer of each stream; longer lines are
// assembled in lineReader.buf.
const readBufferSize = 16 << 10

// keepBufferSize bounds the line buffer kept between lines, so that one
// huge line does not pin its memory for the life of the stream.
const keepBufferSize = 64 << 10

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, readBufferSize), max: max}
}

// next returns the next line. At the end of the stream it returns io.EOF
// or the read error. Bytes after the last newline come back first as a
// partial line when the stream ended cleanly, and are discarded when it
// failed.
func (r *lineReader) next(l *rawLine) error {
	if cap(r.buf) > keepBufferSize {
		r.buf = nil
	}
	r.buf = r.buf[:0]
	*l = rawLine{}
	limit := r.max + maxTimestampLen
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.buf)+len(chunk) <= limit {
			r.buf = append(r.buf, chunk...)
		} else {
			if room := limit - len(r.buf); room > 0 {
				r.buf = append(r.buf, chunk[:room]...)
			}
			l.truncated = true
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(r.buf) > 0 {
			l.partial = true
			break
		}
		return err
	}
	text := r.buf
	if n := len(text); n > 0 && text[n-1] == '\n' {
		text = text[:n-1]
	}
	ts, rest, ok := splitTimestamp(text)
	if !ok {
		l.noTimestamp = true
		l.text = stripCR(text)
		return nil
	}
	l.time = ts
	if len(rest) > r.max {
		rest = rest[:r.max]
		l.truncated = true
	}
	if !l.truncated {
		rest = stripCR(rest)
	}
	l.text = rest
	return nil
}

func stripCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// splitTimestamp splits "<RFC3339Nano> <text>" as the kubelet writes it
// with timestamps=true.
func splitTimestamp(b []byte) (time.Time, []byte, bool) {
	sp := bytes.IndexByte(b[:min(len(b), maxTimestampLen)], ' ')
	field := b
	var rest []byte
	if sp >= 0 {
		field, rest = b[:sp], b[sp+1:]
	}
	// The shortest valid form is "2006-01-02T15:04:05Z".
	if len(field) < 20 || field[4] != '-' || field[10] != 'T' {
		return time.Time{}, nil, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(field))
	if err != nil {
		return time.Time{}, nil, false
	}
	return ts, rest, true
}
