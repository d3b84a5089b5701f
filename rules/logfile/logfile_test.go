package logfile

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/authwatch/authwatch/rules"
)

// record is what a test expects of one Line.
type record struct {
	Text      string
	Time      string // RFC 3339, or "" for none
	Pod       string
	Container string
	Truncated bool
	LineNo    int
}

func readAll(t *testing.T, r io.Reader, opts Options) ([]record, Stats, *Reader) {
	t.Helper()
	rd, err := NewReader(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	var l rules.Line
	for rd.Next(&l) {
		rec := record{Text: string(l.Text), Pod: l.Source.Pod, Container: l.Source.Container, Truncated: l.Truncated, LineNo: rd.LineNumber()}
		if !l.Time.IsZero() {
			rec.Time = l.Time.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, rec)
	}
	return out, rd.Stats(), rd
}

func TestReaderFormats(t *testing.T) {
	tests := []struct {
		name   string
		format Format
		in     string
		want   []record
		stats  Stats
	}{
		{
			name:  "plain with CRLF and no final newline",
			in:    "one\r\ntwo\n\nthree",
			want:  []record{{Text: "one", LineNo: 1}, {Text: "two", LineNo: 2}, {Text: "", LineNo: 3}, {Text: "three", LineNo: 4}},
			stats: Stats{Lines: 4},
		},
		{
			name: "timestamps detected",
			in:   "2026-05-02T11:00:00.123456789Z hello\n2026-05-02T13:00:01+02:00 world\r\nno timestamp here\n",
			want: []record{
				{Text: "hello", Time: "2026-05-02T11:00:00.123456789Z", LineNo: 1},
				{Text: "world", Time: "2026-05-02T11:00:01Z", LineNo: 2},
				{Text: "no timestamp here", LineNo: 3},
			},
			stats: Stats{Lines: 3, Malformed: 1},
		},
		{
			name: "prefix detected",
			in:   "[pod/web-0/app] hello\n[pod/web-1/sidecar] world\n",
			want: []record{
				{Text: "hello", Pod: "web-0", Container: "app", LineNo: 1},
				{Text: "world", Pod: "web-1", Container: "sidecar", LineNo: 2},
			},
			stats: Stats{Lines: 2},
		},
		{
			name: "prefix and timestamps detected",
			in:   "[pod/web-0/app] 2026-05-02T11:00:00Z hello\n[pod/web-0/app] not a time\n",
			want: []record{
				{Text: "hello", Time: "2026-05-02T11:00:00Z", Pod: "web-0", Container: "app", LineNo: 1},
				{Text: "not a time", Pod: "web-0", Container: "app", LineNo: 2},
			},
			stats: Stats{Lines: 2, Malformed: 1},
		},
		{
			name: "prefix then a line without one",
			in:   "[pod/web-0/app] hello\nno prefix here\n",
			want: []record{
				{Text: "hello", Pod: "web-0", Container: "app", LineNo: 1},
				{Text: "no prefix here", LineNo: 2},
			},
			stats: Stats{Lines: 2, Malformed: 1},
		},
		{
			name: "CRI partial records joined per stream",
			in: "2026-05-02T11:00:00Z stdout P hel\n" +
				"2026-05-02T11:00:01Z stderr F other stream\n" +
				"2026-05-02T11:00:02Z stdout P lo \n" +
				"2026-05-02T11:00:03Z stdout F world\n" +
				"2026-05-02T11:00:04Z stdout F\n" +
				"garbage line\n" +
				"2026-05-02T11:00:05Z stderr P left open\n",
			want: []record{
				{Text: "other stream", Time: "2026-05-02T11:00:01Z", LineNo: 2},
				{Text: "hello world", Time: "2026-05-02T11:00:03Z", LineNo: 4},
				{Text: "", Time: "2026-05-02T11:00:04Z", LineNo: 5},
				{Text: "garbage line", LineNo: 6},
				{Text: "left open", LineNo: 7},
			},
			stats: Stats{Lines: 5, Malformed: 1},
		},
		{
			name:   "CRI forced to plain",
			format: Plain,
			in:     "2026-05-02T11:00:00Z stdout F hello\n",
			want:   []record{{Text: "2026-05-02T11:00:00Z stdout F hello", LineNo: 1}},
			stats:  Stats{Lines: 1},
		},
		{
			name:   "timestamps forced on plain lines",
			format: Timestamps,
			in:     "INFO hello\n",
			want:   []record{{Text: "INFO hello", LineNo: 1}},
			stats:  Stats{Lines: 1, Malformed: 1},
		},
		{
			name:  "leading blank lines before detection",
			in:    "\n\n2026-05-02T11:00:00Z stdout F hi\n",
			want:  []record{{Text: "", LineNo: 1}, {Text: "", LineNo: 2}, {Text: "hi", Time: "2026-05-02T11:00:00Z", LineNo: 3}},
			stats: Stats{Lines: 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, stats, _ := readAll(t, strings.NewReader(tc.in), Options{Format: tc.format})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.stats, stats); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReaderCapsLongLines(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than the 64 KiB buffer
	in := "short\n" + long + "\nafter\n" + strings.Repeat("y", 100)
	got, stats, _ := readAll(t, strings.NewReader(in), Options{MaxLineBytes: 100 << 10})
	if len(got) != 4 {
		t.Fatalf("got %d records, want 4", len(got))
	}
	if len(got[1].Text) != 100<<10 || !got[1].Truncated || got[1].LineNo != 2 {
		t.Errorf("long line: %d bytes, truncated %v, line %d; want %d bytes, truncated, line 2", len(got[1].Text), got[1].Truncated, got[1].LineNo, 100<<10)
	}
	if got[2].Text != "after" || got[2].Truncated {
		t.Errorf("line after the long one: %+v", got[2])
	}
	if got[3].Truncated || len(got[3].Text) != 100 {
		t.Errorf("final line: %d bytes, truncated %v", len(got[3].Text), got[3].Truncated)
	}
	if stats.Truncated != 1 {
		t.Errorf("Truncated = %d, want 1", stats.Truncated)
	}
}

func TestReaderCapsJoinedCRIRecords(t *testing.T) {
	var b strings.Builder
	for range 10 {
		b.WriteString("2026-05-02T11:00:00Z stdout P 0123456789\n")
	}
	b.WriteString("2026-05-02T11:00:01Z stdout F end\n")
	b.WriteString("2026-05-02T11:00:02Z stdout F next\n")
	got, stats, _ := readAll(t, strings.NewReader(b.String()), Options{MaxLineBytes: 25})
	want := []record{
		{Text: "0123456789012345678901234", Time: "2026-05-02T11:00:01Z", Truncated: true, LineNo: 11},
		{Text: "next", Time: "2026-05-02T11:00:02Z", LineNo: 12},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if stats.Truncated != 1 {
		t.Errorf("Truncated = %d, want 1", stats.Truncated)
	}
}

func TestReaderGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("2026-05-02T11:00:00Z stdout F compressed\n"))
	zw.Close()
	got, _, _ := readAll(t, &buf, Options{})
	want := []record{{Text: "compressed", Time: "2026-05-02T11:00:00Z", LineNo: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

func TestReaderCorruptGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(strings.Repeat("line\n", 1000)))
	zw.Close()
	data := buf.Bytes()
	data = data[:len(data)/2] // cut in the middle of the stream
	_, _, rd := readAll(t, bytes.NewReader(data), Options{})
	if !errors.Is(rd.Err(), io.ErrUnexpectedEOF) {
		t.Errorf("Err() = %v, want io.ErrUnexpectedEOF", rd.Err())
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestReaderReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader("one\n"), failingReader{boom})
	got, _, rd := readAll(t, r, Options{})
	if len(got) != 1 || got[0].Text != "one" {
		t.Errorf("records before the error: %+v", got)
	}
	if !errors.Is(rd.Err(), boom) {
		t.Errorf("Err() = %v, want %v", rd.Err(), boom)
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{Auto, Plain, Timestamps, CRI, Prefix, PrefixTimestamps} {
		got, err := ParseFormat(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	_, err := ParseFormat("syslog")
	want := `logfile: unknown format "syslog"; valid formats are auto, plain, timestamps, cri, prefix, prefix-timestamps`
	if err == nil || err.Error() != want {
		t.Errorf("ParseFormat(syslog) error = %v, want %s", err, want)
	}
}

// FuzzReader feeds arbitrary input in every format: no panic, every
// record within the cap, and line numbers that never go backwards.
func FuzzReader(f *testing.F) {
	f.Add([]byte("2026-05-02T11:00:00Z stdout P a\n2026-05-02T11:00:00Z stdout F b\n"), uint8(0), uint16(16))
	f.Add([]byte("[pod/a/b] 2026-05-02T11:00:00Z x\r\n"), uint8(5), uint16(4))
	f.Add([]byte("\x1f\x8b\x08\x00"), uint8(1), uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, format uint8, max uint16) {
		opts := Options{Format: Format(format % uint8(len(formatNames))), MaxLineBytes: int(max%512) + 1}
		rd, err := NewReader(bytes.NewReader(data), opts)
		if err != nil {
			return
		}
		var l rules.Line
		last := 0
		for rd.Next(&l) {
			if len(l.Text) > opts.MaxLineBytes {
				t.Fatalf("record of %d bytes exceeds the cap of %d", len(l.Text), opts.MaxLineBytes)
			}
			if rd.LineNumber() < last {
				t.Fatalf("line number went from %d to %d", last, rd.LineNumber())
			}
			last = rd.LineNumber()
		}
	})
}
