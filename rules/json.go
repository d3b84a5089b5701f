package rules

// A minimal JSON reader for field conditions. It finds one member of an
// object by a dotted path without decoding the rest and without allocating.
// It returns no errors: on malformed input the field is not found.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the offset just past the closing quote of the string
// that starts at b[i] == '"', or -1 when it is not closed.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the offset just past the value that starts at b[i], or
// -1 when the value is malformed or cut off.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return j
}

// jsonField returns the value at path in the JSON object text: for a string
// its content between the quotes (escapes left as they are), for anything
// else the raw token. ok is false when text is not an object or the member
// is missing.
func jsonField(text []byte, path string) (val []byte, ok bool) {
	i := skipSpace(text, 0)
	for {
		seg := path
		rest := ""
		for k := 0; k < len(path); k++ {
			if path[k] == '.' {
				seg, rest = path[:k], path[k+1:]
				break
			}
		}
		if i >= len(text) || text[i] != '{' {
			return nil, false
		}
		i++
		found := false
		for !found {
			i = skipSpace(text, i)
			if i >= len(text) || text[i] != '"' {
				return nil, false
			}
			ke := stringEnd(text, i)
			if ke < 0 {
				return nil, false
			}
			key := text[i+1 : ke-1]
			i = skipSpace(text, ke)
			if i >= len(text) || text[i] != ':' {
				return nil, false
			}
			i = skipSpace(text, i+1)
			if string(key) == seg {
				found = true
				break
			}
			ve := valueEnd(text, i)
			if ve < 0 {
				return nil, false
			}
			i = skipSpace(text, ve)
			if i >= len(text) || text[i] != ',' {
				return nil, false
			}
			i++
		}
		if rest == "" {
			ve := valueEnd(text, i)
			if ve < 0 {
				return nil, false
			}
			if text[i] == '"' {
				return text[i+1 : ve-1], true
			}
			return text[i:ve], true
		}
		path = rest
	}
}
