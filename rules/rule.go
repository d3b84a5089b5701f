package rules

// Rule is one rule of a pack as written, after defaults are applied. The
// compiled form lives inside a Matcher; Rule is what `authwatch rules list`
// shows and what user packs override.
type Rule struct {
	ID          string
	Description string
	Category    Category
	// Severity defaults to SeverityError. Warning marks lines that announce
	// an expiry without a failure.
	Severity Severity
	// Literals are the strings the prefilter looks for; a line must contain
	// at least one of them. When empty, they are derived from Regex or from
	// the JSON conditions.
	Literals []string
	// CaseSensitive makes Literals, Regex and JSON values match case
	// sensitively; by default they ignore ASCII case.
	CaseSensitive bool
	// WholeWords makes a literal count only where it is not part of a
	// longer word: the bytes around it are not ASCII letters, digits or
	// '_'. It lets a rule such as "ERROR as a word" skip the regex.
	WholeWords bool
	// Regex is an RE2 expression that must match the line as well.
	Regex string
	// JSON conditions must all hold on a line that is a JSON object.
	JSON []FieldCondition
	// Exclude rejects a line that the other conditions accept.
	Exclude Exclusion
	// Fields allow-lists the named capture groups of Regex and the JSON
	// fields that a Match carries. Nothing else is extracted.
	Fields []string
	// Origin is "default" for the embedded pack, or the file name of the
	// user pack that defined the rule.
	Origin string
}

// FieldCondition tests one field of a JSON line. Field is a key of the
// top-level object, or a dotted path into nested objects ("error.code").
// When Equals is set, the value must equal one of its entries. When
// Contains is set, it must contain one of its entries. With neither, the
// field must exist. Values compare as text: the number 401 equals "401".
type FieldCondition struct {
	Field    string
	Equals   []string
	Contains []string
}

// Exclusion lists what makes an otherwise matching line not match: any of
// Literals (ignoring ASCII case unless the rule is case sensitive) or a
// match of Regex.
type Exclusion struct {
	Literals []string
	Regex    string
}

// secretFieldNames are field names that a rule may not extract, because
// their values are credentials.
var secretFieldNames = []string{
	"token", "access_token", "refresh_token", "id_token", "jwt", "bearer",
	"password", "passwd", "pwd", "secret", "client_secret", "authorization",
	"cookie", "set_cookie", "api_key", "apikey", "key", "credential",
	"credentials", "session", "signature",
}

func isSecretFieldName(name string) bool {
	for _, s := range secretFieldNames {
		if equalFoldString(name, s) {
			return true
		}
	}
	return false
}

func equalFoldString(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if fold(a[i]) != fold(b[i]) {
			return false
		}
	}
	return true
}
