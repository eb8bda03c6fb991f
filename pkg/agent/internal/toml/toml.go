// Package toml reads the container runtimes' TOML configuration files
// (CRI-O's crio.conf and drop-ins, containerd's config.toml and imports)
// well enough for the agent to look up a few switches in them, without a
// TOML module in the agent's dependencies.
//
// It accepts the TOML 1.0 syntax: tables, arrays of tables, dotted and
// quoted keys, inline tables (across lines too, as TOML 1.1 allows),
// arrays, the four string forms and comments. Strings and booleans are
// decoded; other scalars (numbers, dates) are kept as their source text,
// since the agent reads none. Redefinitions that TOML forbids are not
// reported: the later value wins.
package toml

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Parse decodes a document into nested maps: a table is a map[string]any,
// an array (of values or of tables) a []any.
func Parse(data []byte) (map[string]any, error) {
	p := &parser{s: strings.TrimPrefix(string(data), "\ufeff")}
	doc, err := p.document()
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", strings.Count(p.s[:p.i], "\n")+1, err)
	}
	return doc, nil
}

// Lookup returns the value at the key path, and whether it is set.
func Lookup(doc map[string]any, keys ...string) (any, bool) {
	var cur any = doc
	for _, k := range keys {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

type parser struct {
	s string
	i int
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) rest() string { return p.s[p.i:] }

// ws skips spaces and tabs.
func (p *parser) ws() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// comment skips a comment up to (not including) the end of the line.
func (p *parser) comment() {
	if !p.eof() && p.s[p.i] == '#' {
		for !p.eof() && p.s[p.i] != '\n' {
			p.i++
		}
	}
}

// blank skips whitespace, newlines and comments.
func (p *parser) blank() {
	for {
		p.ws()
		p.comment()
		switch {
		case strings.HasPrefix(p.rest(), "\n"):
			p.i++
		case strings.HasPrefix(p.rest(), "\r\n"):
			p.i += 2
		default:
			return
		}
	}
}

func (p *parser) document() (map[string]any, error) {
	root := map[string]any{}
	cur := root
	for {
		p.blank()
		if p.eof() {
			return root, nil
		}
		var err error
		switch {
		case strings.HasPrefix(p.rest(), "[["):
			p.i += 2
			var keys []string
			if keys, err = p.header("]]"); err == nil {
				cur, err = arrayTable(root, keys)
			}
		case p.s[p.i] == '[':
			p.i++
			var keys []string
			if keys, err = p.header("]"); err == nil {
				cur, err = table(root, keys)
			}
		default:
			err = p.keyValue(cur)
		}
		if err != nil {
			return nil, err
		}
		p.ws()
		p.comment()
		switch {
		case p.eof():
		case strings.HasPrefix(p.rest(), "\n"):
			p.i++
		case strings.HasPrefix(p.rest(), "\r\n"):
			p.i += 2
		default:
			return nil, fmt.Errorf("unexpected %q after a value or table header", p.s[p.i])
		}
	}
}

func (p *parser) header(end string) ([]string, error) {
	keys, err := p.key()
	if err != nil {
		return nil, err
	}
	p.ws()
	if !strings.HasPrefix(p.rest(), end) {
		return nil, fmt.Errorf("table header not closed by %q", end)
	}
	p.i += len(end)
	return keys, nil
}

func (p *parser) keyValue(t map[string]any) error {
	keys, err := p.key()
	if err != nil {
		return err
	}
	p.ws()
	if p.eof() || p.s[p.i] != '=' {
		return fmt.Errorf("expected = after key %s", strings.Join(keys, "."))
	}
	p.i++
	p.ws()
	v, err := p.value()
	if err != nil {
		return err
	}
	return set(t, keys, v)
}

// key reads a dotted key.
func (p *parser) key() ([]string, error) {
	var keys []string
	for {
		p.ws()
		k, err := p.simpleKey()
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
		p.ws()
		if p.eof() || p.s[p.i] != '.' {
			return keys, nil
		}
		p.i++
	}
}

func (p *parser) simpleKey() (string, error) {
	if p.eof() {
		return "", fmt.Errorf("expected a key")
	}
	switch p.s[p.i] {
	case '"':
		return p.basicString()
	case '\'':
		return p.literalString()
	}
	start := p.i
	for !p.eof() && isBare(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", fmt.Errorf("expected a key, found %q", p.s[p.i])
	}
	return p.s[start:p.i], nil
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func (p *parser) value() (any, error) {
	if p.eof() {
		return nil, fmt.Errorf("expected a value")
	}
	r := p.rest()
	switch {
	case strings.HasPrefix(r, `"""`):
		return p.multiLine(`"`, true)
	case r[0] == '"':
		return p.basicString()
	case strings.HasPrefix(r, "'''"):
		return p.multiLine("'", false)
	case r[0] == '\'':
		return p.literalString()
	case r[0] == '[':
		return p.array()
	case r[0] == '{':
		return p.inlineTable()
	}
	start := p.i
	for !p.eof() && !strings.ContainsRune(" \t\r\n,]}#", rune(p.s[p.i])) {
		p.i++
	}
	tok := p.s[start:p.i]
	switch tok {
	case "":
		return nil, fmt.Errorf("expected a value, found %q", p.s[p.i])
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	// Local date-times may hold a space ("1979-05-27 07:32:00"): the
	// agent reads none, so the token is kept up to the space, and the
	// rest of the line is skipped as the value's.
	if len(tok) == 10 && tok[4] == '-' && tok[7] == '-' && strings.HasPrefix(p.rest(), " ") {
		j := p.i + 1
		for j < len(p.s) && !strings.ContainsRune(" \t\r\n,]}#", rune(p.s[j])) {
			j++
		}
		if j > p.i+1 && p.s[p.i+1] >= '0' && p.s[p.i+1] <= '9' {
			tok, p.i = p.s[start:j], j
		}
	}
	return tok, nil
}

func (p *parser) array() ([]any, error) {
	p.i++ // [
	out := []any{}
	for {
		p.blank()
		if p.eof() {
			return nil, fmt.Errorf("array not closed")
		}
		if p.s[p.i] == ']' {
			p.i++
			return out, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.blank()
		if p.eof() {
			return nil, fmt.Errorf("array not closed")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
		default:
			return nil, fmt.Errorf("expected , or ] in an array, found %q", p.s[p.i])
		}
	}
}

func (p *parser) inlineTable() (map[string]any, error) {
	p.i++ // {
	t := map[string]any{}
	for {
		p.blank()
		if p.eof() {
			return nil, fmt.Errorf("inline table not closed")
		}
		if p.s[p.i] == '}' {
			p.i++
			return t, nil
		}
		if err := p.keyValue(t); err != nil {
			return nil, err
		}
		p.blank()
		if p.eof() {
			return nil, fmt.Errorf("inline table not closed")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
		default:
			return nil, fmt.Errorf("expected , or } in an inline table, found %q", p.s[p.i])
		}
	}
}

func (p *parser) literalString() (string, error) {
	p.i++ // '
	end := strings.IndexAny(p.rest(), "'\n")
	if end < 0 || p.s[p.i+end] != '\'' {
		return "", fmt.Errorf("literal string not closed on its line")
	}
	s := p.s[p.i : p.i+end]
	p.i += end + 1
	return s, nil
}

func (p *parser) basicString() (string, error) {
	p.i++ // "
	var b strings.Builder
	for {
		if p.eof() || p.s[p.i] == '\n' {
			return "", fmt.Errorf("string not closed on its line")
		}
		switch c := p.s[p.i]; c {
		case '"':
			p.i++
			return b.String(), nil
		case '\\':
			if err := p.escape(&b); err != nil {
				return "", err
			}
		default:
			b.WriteByte(c)
			p.i++
		}
	}
}

// multiLine reads a multi-line string, basic (escapes decoded) or
// literal, quote being its delimiter's character.
func (p *parser) multiLine(quote string, escapes bool) (string, error) {
	p.i += 3
	// A newline right after the opening delimiter is trimmed.
	if strings.HasPrefix(p.rest(), "\n") {
		p.i++
	} else if strings.HasPrefix(p.rest(), "\r\n") {
		p.i += 2
	}
	var b strings.Builder
	for {
		if p.eof() {
			return "", fmt.Errorf("multi-line string not closed")
		}
		if strings.HasPrefix(p.rest(), quote+quote+quote) {
			// Up to two quotes may close the content before the delimiter.
			n := 0
			for p.i+n < len(p.s) && p.s[p.i+n] == quote[0] {
				n++
			}
			b.WriteString(strings.Repeat(quote, min(n-3, 2)))
			p.i += n
			return b.String(), nil
		}
		c := p.s[p.i]
		if c == '\\' && escapes {
			// A backslash ending a line trims the whitespace after it.
			j := p.i + 1
			for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
				j++
			}
			if j < len(p.s) && (p.s[j] == '\n' || p.s[j] == '\r') {
				for j < len(p.s) && strings.ContainsRune(" \t\r\n", rune(p.s[j])) {
					j++
				}
				p.i = j
				continue
			}
			if err := p.escape(&b); err != nil {
				return "", err
			}
			continue
		}
		b.WriteByte(c)
		p.i++
	}
}

// escape decodes the escape sequence at p.i (a backslash).
func (p *parser) escape(b *strings.Builder) error {
	if p.i+1 >= len(p.s) {
		return fmt.Errorf("unfinished escape sequence")
	}
	c := p.s[p.i+1]
	p.i += 2
	switch c {
	case 'b':
		b.WriteByte('\b')
	case 't':
		b.WriteByte('\t')
	case 'n':
		b.WriteByte('\n')
	case 'f':
		b.WriteByte('\f')
	case 'r':
		b.WriteByte('\r')
	case 'e':
		b.WriteByte(0x1b)
	case '"':
		b.WriteByte('"')
	case '\\':
		b.WriteByte('\\')
	case 'u', 'U':
		n := 4
		if c == 'U' {
			n = 8
		}
		if p.i+n > len(p.s) {
			return fmt.Errorf("unfinished \\%c escape", c)
		}
		code, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
		if err != nil || !utf8.ValidRune(rune(code)) {
			return fmt.Errorf("invalid \\%c escape %q", c, p.s[p.i:p.i+n])
		}
		b.WriteRune(rune(code))
		p.i += n
	default:
		return fmt.Errorf("invalid escape \\%c", c)
	}
	return nil
}

// table returns the table a [header] names, creating it and its parents.
// A key naming an array of tables descends into its last table.
func table(root map[string]any, keys []string) (map[string]any, error) {
	cur := root
	for _, k := range keys {
		switch v := cur[k].(type) {
		case nil:
			t := map[string]any{}
			cur[k] = t
			cur = t
		case map[string]any:
			cur = v
		case []any:
			last, ok := lastTable(v)
			if !ok {
				return nil, fmt.Errorf("key %s is an array of values, not of tables", k)
			}
			cur = last
		default:
			return nil, fmt.Errorf("key %s is a value, not a table", k)
		}
	}
	return cur, nil
}

func lastTable(a []any) (map[string]any, bool) {
	if len(a) == 0 {
		return nil, false
	}
	t, ok := a[len(a)-1].(map[string]any)
	return t, ok
}

// arrayTable appends a table to the array of tables a [[header]] names.
func arrayTable(root map[string]any, keys []string) (map[string]any, error) {
	parent, err := table(root, keys[:len(keys)-1])
	if err != nil {
		return nil, err
	}
	k, t := keys[len(keys)-1], map[string]any{}
	switch v := parent[k].(type) {
	case nil:
		parent[k] = []any{t}
	case []any:
		parent[k] = append(v, t)
	default:
		return nil, fmt.Errorf("key %s is not an array of tables", k)
	}
	return t, nil
}

// set assigns a value to a dotted key relative to t.
func set(t map[string]any, keys []string, v any) error {
	parent, err := table(t, keys[:len(keys)-1])
	if err != nil {
		return err
	}
	parent[keys[len(keys)-1]] = v
	return nil
}
