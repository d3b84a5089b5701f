package watcher

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("2026-12-04T10:00:00.5Z plain\n2026-12-04T10:00:01Z crlf\r\nkubelet text\n2026-12-04T10:00:02Z tail"), 32)
	f.Add([]byte("2026-12-04T10:00:00Z "+string(bytes.Repeat([]byte{'x'}, 5000))+"\n"), 1024)
	f.Add([]byte("\xff\xfe\n\n\r\n 2026"), 16)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		r := newLineReader(bytes.NewReader(in), max)
		lines := 0
		for {
			var l rawLine
			err := r.next(&l)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("next() = %v on an in-memory reader", err)
			}
			lines++
			if lines > len(in)+1 {
				t.Fatalf("more lines (%d) than input bytes (%d)", lines, len(in))
			}
			if !l.noTimestamp && len(l.text) > max {
				t.Errorf("line of %d bytes over the cap of %d", len(l.text), max)
			}
			if bytes.IndexByte(l.text, '\n') >= 0 {
				t.Errorf("line %q contains a newline", l.text)
			}
			if l.noTimestamp && !l.time.IsZero() {
				t.Errorf("line without a timestamp has time %v", l.time)
			}
		}
	})
}
