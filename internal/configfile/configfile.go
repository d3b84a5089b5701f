// Package configfile decodes a YAML configuration file into the Go
// structs that own its sections and reports every problem with the file,
// the line, the YAML path, the bad value and the fix. It walks the
// yaml.Node tree against the struct's yaml tags, so unknown keys, type
// errors and inline secrets are found in one place for every section.
package configfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a configuration file. Its message reads
// "FILE:LINE: PATH: MSG; HINT".
type Error struct {
	File string
	Line int
	Path string // for example "policies[0].window"
	Msg  string // the problem, quoting the bad value
	Hint string // the fix
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	return b.String()
}

// ErrWalk marks a value that the check accepted but yaml.v3 then failed
// to decode. Such an error is a bug in this package, and the fuzz test
// of the composed config looks for it.
var ErrWalk = errors.New("configfile: value accepted by the check failed to decode")

// RefKind is the kind of thing that a string value names.
type RefKind int

// The kinds of reference that Decode collects.
const (
	// File is a path: a key ending in _file, or a field tagged
	// `config:"file"`.
	File RefKind = iota
	// Env is the name of an environment variable: a key ending in _env.
	Env
)

// Ref is a file path or environment variable name set in the file.
type Ref struct {
	Kind RefKind
	Path string // YAML path, for example "alerting.slack.token_file"
	// Value points at the decoded string, so that a caller can resolve
	// a relative path in place.
	Value *string
}

// Decode decodes data, the content of file, over dst (a pointer to a
// struct that holds the defaults). It fails with the joined *Error values
// of every unknown key, duplicate key and value of the wrong type, and
// with an error for a second YAML document. An empty file keeps dst as it
// is. On success it returns the file and environment references in dst.
func Decode(file string, data []byte, dst any) ([]Ref, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}

	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Line: extra.Line, Msg: "more than one YAML document", Hint: "keep the whole configuration in one"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if isNull(root) {
		return nil, nil
	}

	w := walker{file: file}
	w.check(root, "", reflect.TypeOf(dst).Elem())
	if len(w.errs) > 0 {
		return nil, errors.Join(w.errs...)
	}
	if err := root.Decode(dst); err != nil {
		// The walk accepts only what decodes, so this is a bug here.
		return nil, fmt.Errorf("%s: %w: %w", file, ErrWalk, err)
	}

	var refs []Ref
	collectRefs(reflect.ValueOf(dst).Elem(), "", false, &refs)
	return refs, nil
}

// ResolvePaths makes every relative File reference absolute against dir,
// the directory of the configuration file, as Prometheus does.
func ResolvePaths(refs []Ref, dir string) {
	for _, r := range refs {
		if r.Kind == File && *r.Value != "" && !filepath.IsAbs(*r.Value) {
			*r.Value = filepath.Join(dir, *r.Value)
		}
	}
}

type walker struct {
	file string
	errs []error
}

func (w *walker) fail(n *yaml.Node, path, hint, format string, args ...any) {
	w.errs = append(w.errs, &Error{File: w.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	stringType   = reflect.TypeFor[string]()
)

// isDuration reports whether t is time.Duration or a named int64 type
// called Duration (such as watcher.Duration) that YAML spells as "5m".
func isDuration(t reflect.Type) bool {
	return t == durationType || (t.Kind() == reflect.Int64 && t.Name() == "Duration")
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return strconv.Quote(n.Value)
	}
}

// check reports what in n does not fit type t at path.
func (w *walker) check(n *yaml.Node, path string, t reflect.Type) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if isNull(n) {
		return // null keeps the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case isDuration(t):
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "use a Go duration such as 5m, 30s or 1h30m", "expected a duration, got %s", describe(n))
		} else if n.ShortTag() == "!!int" || n.ShortTag() == "!!float" {
			// yaml.v3 decodes no bare number into time.Duration, not even
			// 0, so a number is rejected here for every duration field.
			w.fail(n, path, "use a Go duration such as 5m, 30s or 1h30m", "invalid duration %s: a duration needs a unit", n.Value)
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			w.fail(n, path, "use a Go duration such as 5m, 30s or 1h30m", "invalid duration %q", n.Value)
		}
		return
	case t.Kind() == reflect.Struct:
		w.mapping(n, path, t)
		return
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "write a list such as [a, b] or one \"- item\" per line", "expected a list, got %s", describe(n))
			return
		}
		for i, e := range n.Content {
			w.check(e, fmt.Sprintf("%s[%d]", path, i), t.Elem())
		}
		return
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "write a mapping of key: value lines", "expected a mapping, got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.check(n.Content[i+1], join(path, n.Content[i].Value), t.Elem())
		}
		return
	}
	w.scalar(n, path, t)
}

// scalar checks a leaf value by decoding it on its own.
func (w *walker) scalar(n *yaml.Node, path string, t reflect.Type) {
	if n.Kind != yaml.ScalarNode {
		w.fail(n, path, "write a single value", "expected %s, got %s", typeName(t), describe(n))
		return
	}
	err := n.Decode(reflect.New(t).Interface())
	if err == nil && isInt(t) && n.ShortTag() != "!!int" {
		// yaml.v3 truncates 1.5 to 1 for an integer field.
		err = errors.New("not an integer")
	}
	if err == nil {
		return
	}
	switch t.Kind() {
	case reflect.Bool:
		w.fail(n, path, "use true or false", "invalid boolean %q", n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		w.fail(n, path, "use a whole number such as 10", "invalid integer %q", n.Value)
	case reflect.Float32, reflect.Float64:
		w.fail(n, path, "use a number such as 0.5", "invalid number %q", n.Value)
	default:
		w.fail(n, path, "quote the value", "invalid %s %q", typeName(t), n.Value)
	}
}

func isInt(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	}
	return "a value"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping checks the keys of n against the yaml tags of struct type t.
func (w *walker) mapping(n *yaml.Node, path string, t reflect.Type) {
	if n.Kind != yaml.MappingNode {
		w.fail(n, path, "write a mapping of key: value lines", "expected a mapping, got %s", describe(n))
		return
	}
	fields := structFields(t)
	keys := make([]string, 0, len(fields))
	for _, f := range fields {
		keys = append(keys, f.key)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			w.merge(v, path, t)
			continue
		}
		kpath := join(path, k.Value)
		idx := slices.IndexFunc(fields, func(f field) bool { return f.key == k.Value })
		if idx < 0 {
			w.fail(k, kpath, unknownKeyHint(k.Value, keys), "unknown key %q", k.Value)
			continue
		}
		if seen[k.Value] {
			w.fail(k, kpath, "keep one of them", "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		w.check(v, kpath, fields[idx].typ)
	}
}

// merge checks the mappings that a "<<" merge key brings in: one
// mapping, an alias of one, or a list of them.
func (w *walker) merge(v *yaml.Node, path string, t reflect.Type) {
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind != yaml.SequenceNode {
		w.mapping(v, path, t)
		return
	}
	for _, e := range v.Content {
		if e.Kind == yaml.AliasNode && e.Alias != nil {
			e = e.Alias
		}
		w.mapping(e, path, t)
	}
}

// unknownKeyHint names the fix for an unknown key: the _file and _env
// forms of an inline secret, or the closest valid key and all of them.
func unknownKeyHint(key string, keys []string) string {
	if slices.Contains(keys, key+"_file") || slices.Contains(keys, key+"_env") {
		return fmt.Sprintf("use %s_file or %s_env; secrets are never inline", key, key)
	}
	valid := "valid keys are " + strings.Join(keys, ", ")
	if len(keys) == 0 {
		return "this mapping takes no keys"
	}
	if c := closest(key, keys); c != "" {
		return fmt.Sprintf("did you mean %s? %s", c, valid)
	}
	return valid
}

// closest returns the key within a small edit distance of key, or "".
func closest(key string, keys []string) string {
	best, bestDist := "", len(key)/3+2
	for _, k := range keys {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

type field struct {
	key   string
	typ   reflect.Type
	index []int
	file  bool // tagged `config:"file"` or keyed *_file
}

// structFields lists the YAML keys of struct type t in declaration order,
// including the fields of ",inline" structs.
func structFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for _, f := range structFields(sf.Type) {
				f.index = append([]int{i}, f.index...)
				out = append(out, f)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, field{
			key:   name,
			typ:   sf.Type,
			index: []int{i},
			file:  sf.Tag.Get("config") == "file" || strings.HasSuffix(name, "_file"),
		})
	}
	return out
}

// collectRefs appends the file and environment references in v.
func collectRefs(v reflect.Value, path string, file bool, refs *[]Ref) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			collectRefs(v.Elem(), path, file, refs)
		}
	case reflect.Struct:
		for _, f := range structFields(v.Type()) {
			fv := v.FieldByIndex(f.index)
			p := join(path, f.key)
			if fv.Type() == stringType && strings.HasSuffix(f.key, "_env") {
				*refs = append(*refs, Ref{Kind: Env, Path: p, Value: fv.Addr().Interface().(*string)})
				continue
			}
			collectRefs(fv, p, f.file, refs)
		}
	case reflect.Slice:
		for i := range v.Len() {
			collectRefs(v.Index(i), fmt.Sprintf("%s[%d]", path, i), file, refs)
		}
	case reflect.String:
		if file && v.CanAddr() && v.Type() == stringType {
			*refs = append(*refs, Ref{Kind: File, Path: path, Value: v.Addr().Interface().(*string)})
		}
	}
}
