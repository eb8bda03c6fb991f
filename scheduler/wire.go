package scheduler

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// The extender's JSON. encoding/json decodes and encodes the pod and node
// objects; the node-name lists, which are what a nodeCacheCapable request
// over thousands of nodes consists of, are parsed and written here, because
// reflection over 5,000 strings alone costs more than the extender's budget
// (docs/scheduler.md, Measured). The fuzz test checks this parser against
// encoding/json.

// decodeArgs parses ExtenderArgs as encoding/json would (keys
// case-insensitive, last duplicate wins, unknown keys ignored but
// validated), rejecting anything after the object.
func decodeArgs(body []byte) (*extenderv1.ExtenderArgs, error) {
	return decodeArgsInto(body, nil)
}

// decodeArgsInto is decodeArgs appending the node names to names, a slice
// the caller reuses.
//
// Every node name is a substring of the body, viewed as a string without a
// copy (unsafe.String): the caller must not write to body while it uses
// the names. The extender reuses a request's body buffer only after the
// response is written (putScratch).
func decodeArgsInto(body []byte, names []string) (*extenderv1.ExtenderArgs, error) {
	s := unsafe.String(unsafe.SliceData(body), len(body))
	p := &wireParser{s: s, reuse: names}
	args := &extenderv1.ExtenderArgs{}
	p.ws()
	if !p.eat('{') {
		return nil, p.errorf("want an object")
	}
	p.ws()
	if p.eat('}') {
		return args, p.end()
	}
	for {
		p.ws()
		key, err := p.str()
		if err != nil {
			return nil, err
		}
		p.ws()
		if !p.eat(':') {
			return nil, p.errorf("want ':' after key %q", key)
		}
		p.ws()
		switch {
		case strings.EqualFold(key, "NodeNames"):
			if args.NodeNames, err = p.names(); err != nil {
				return nil, err
			}
		case strings.EqualFold(key, "Pod"):
			args.Pod = nil
			if err := p.std(&args.Pod); err != nil {
				return nil, fmt.Errorf("Pod: %w", err)
			}
		case strings.EqualFold(key, "Nodes"):
			args.Nodes = nil
			if err := p.std(&args.Nodes); err != nil {
				return nil, fmt.Errorf("Nodes: %w", err)
			}
		default:
			var ignored json.RawMessage
			if err := p.std(&ignored); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
		p.ws()
		if p.eat('}') {
			return args, p.end()
		}
		if !p.eat(',') {
			return nil, p.errorf("want ',' or '}'")
		}
	}
}

type wireParser struct {
	s string
	i int
	// reuse is where names() appends: a slice the caller reuses, or nil.
	reuse []string
}

func (p *wireParser) errorf(format string, a ...any) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", p.i, fmt.Sprintf(format, a...))
}

func (p *wireParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *wireParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *wireParser) end() error {
	p.ws()
	if p.i != len(p.s) {
		return p.errorf("data after the JSON object")
	}
	return nil
}

// str reads a JSON string. Plain ASCII without escapes is a substring;
// anything else goes through encoding/json.
func (p *wireParser) str() (string, error) {
	if !p.eat('"') {
		return "", p.errorf("want a string")
	}
	start, plain := p.i, true
	// Fast path: skip plain bytes (one table look-up each, on locals the
	// compiler keeps in registers), and if the first other byte closes the
	// string, it is a substring.
	s, i := p.s, p.i
	for i < len(s) && plainByte[s[i]] {
		i++
	}
	if i < len(s) && s[i] == '"' {
		p.i = i + 1
		return s[start:i], nil
	}
	p.i = i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if plain {
				return p.s[start : p.i-1], nil
			}
			var out string
			if err := json.Unmarshal([]byte(p.s[start-1:p.i]), &out); err != nil {
				return "", p.errorf("%v", err)
			}
			return out, nil
		case c == '\\':
			plain = false
			p.i += 2
		case c < 0x20:
			return "", p.errorf("control character in string")
		case c >= 0x80:
			plain = false
			p.i++
		default:
			p.i++
		}
	}
	return "", p.errorf("unterminated string")
}

// plainByte holds the bytes that are the same inside and outside a JSON
// string: printable ASCII but '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// isPlain reports whether s has only plainByte bytes.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// names reads null or an array of strings.
func (p *wireParser) names() (*[]string, error) {
	if strings.HasPrefix(p.s[p.i:], "null") {
		p.i += 4
		return nil, nil
	}
	if !p.eat('[') {
		return nil, p.errorf("NodeNames: want an array of strings")
	}
	out := p.reuse[:0]
	if out == nil {
		out = make([]string, 0, strings.Count(p.s[p.i:min(len(p.s), p.i+1<<20)], ",")+1)
	}
	p.ws()
	if p.eat(']') {
		return &out, nil
	}
	for {
		p.ws()
		n, err := p.str()
		if err != nil {
			return nil, fmt.Errorf("NodeNames: %w", err)
		}
		out = append(out, n)
		p.ws()
		if p.eat(']') {
			return &out, nil
		}
		if !p.eat(',') {
			return nil, p.errorf("NodeNames: want ',' or ']'")
		}
	}
}

// std decodes the next value with encoding/json, which also validates it.
func (p *wireParser) std(into any) error {
	start := p.i
	if err := p.skip(0); err != nil {
		return err
	}
	return json.Unmarshal([]byte(p.s[start:p.i]), into)
}

// skip moves past one value, trusting encoding/json to validate it after.
func (p *wireParser) skip(depth int) error {
	if depth > 10000 {
		return p.errorf("nested too deeply")
	}
	if p.i >= len(p.s) {
		return p.errorf("unexpected end")
	}
	switch c := p.s[p.i]; c {
	case '"':
		_, err := p.str()
		return err
	case '{', '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		p.i++
		for {
			p.ws()
			if p.eat(closer) {
				return nil
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.eat(':') || p.eat(',') {
				continue
			}
			if p.i >= len(p.s) {
				return p.errorf("unexpected end")
			}
			if p.s[p.i] != closer {
				return p.errorf("unexpected %q", p.s[p.i])
			}
		}
	default:
		start := p.i
		for p.i < len(p.s) && !strings.ContainsRune(" \t\r\n,:]}", rune(p.s[p.i])) {
			p.i++
		}
		if p.i == start {
			return p.errorf("unexpected %q", c)
		}
		return nil
	}
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	if !isPlain(s) {
		b, _ := json.Marshal(s) // a string always marshals
		return append(dst, b...)
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendFilterResult writes the filter's answer: the ExtenderFilterResult
// json.Marshal would write, built from the outcome of each node of args
// (in the request's order) rather than from maps. last is an empty map
// for appendRefused, or nil when the request names no node twice.
func appendFilterResult(dst []byte, args *extenderv1.ExtenderArgs, outcomes []*refusal, last map[string]int) ([]byte, error) {
	byName := args.NodeNames != nil
	dst = append(dst, `{"Nodes":`...)
	if byName {
		dst = append(dst, "null"...)
	} else {
		passed := make([]corev1.Node, 0, len(outcomes))
		for i, r := range outcomes {
			if r == nil {
				passed = append(passed, args.Nodes.Items[i])
			}
		}
		b, err := json.Marshal(&corev1.NodeList{Items: passed})
		if err != nil {
			return nil, err
		}
		dst = append(dst, b...)
	}
	dst = append(dst, `,"NodeNames":`...)
	if byName {
		dst = append(dst, '[')
		first := true
		for i, r := range outcomes {
			if r == nil {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				dst = appendString(dst, nodeName(args, i))
			}
		}
		dst = append(dst, ']')
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"FailedNodes":`...)
	dst = appendRefused(dst, args, outcomes, false, last)
	dst = append(dst, `,"FailedAndUnresolvableNodes":`...)
	dst = appendRefused(dst, args, outcomes, true, last)
	return append(dst, `,"Error":""}`...), nil
}

// appendRefused writes the map of refused nodes that are (or are not)
// unresolvable. A name the request repeats is written once, with its last
// refusal, as a Go map filled in the request's order would hold it; last
// (when not nil) finds the repeats.
func appendRefused(dst []byte, args *extenderv1.ExtenderArgs, outcomes []*refusal, unresolvable bool, last map[string]int) []byte {
	if last != nil {
		clear(last)
		for i, r := range outcomes {
			if r != nil && r.verdict.Unresolvable == unresolvable {
				last[nodeName(args, i)] = i
			}
		}
	}
	dst = append(dst, '{')
	first := true
	for i, r := range outcomes {
		if r == nil || r.verdict.Unresolvable != unresolvable {
			continue
		}
		name := nodeName(args, i)
		if last != nil && last[name] != i {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendString(dst, name)
		dst = append(dst, ':')
		dst = append(dst, r.json...)
	}
	return append(dst, '}')
}

func encodePriorities(dst []byte, l extenderv1.HostPriorityList) []byte {
	dst = append(dst, '[')
	for i, h := range l {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"Host":`...)
		dst = appendString(dst, h.Host)
		dst = append(dst, `,"Score":`...)
		dst = strconv.AppendInt(dst, h.Score, 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
