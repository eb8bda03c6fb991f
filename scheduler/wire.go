package scheduler

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

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
	// Every node name is a substring of the body, viewed as a string
	// without a copy: body is never written after it was read.
	s := unsafe.String(unsafe.SliceData(body), len(body))
	p := &wireParser{s: s}
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

// names reads null or an array of strings.
func (p *wireParser) names() (*[]string, error) {
	if strings.HasPrefix(p.s[p.i:], "null") {
		p.i += 4
		return nil, nil
	}
	if !p.eat('[') {
		return nil, p.errorf("NodeNames: want an array of strings")
	}
	out := make([]string, 0, strings.Count(p.s[p.i:min(len(p.s), p.i+1<<20)], ",")+1)
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
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

func appendNames(dst []byte, names []string) []byte {
	dst = append(dst, '[')
	for i, n := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, n)
	}
	return append(dst, ']')
}

func appendFailed(dst []byte, m extenderv1.FailedNodesMap) []byte {
	dst = append(dst, '{')
	first := true
	for node, msg := range m {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendString(dst, node)
		dst = append(dst, ':')
		dst = appendString(dst, msg)
	}
	return append(dst, '}')
}

// encodeFilterResult writes what json.Marshal would, field for field.
func encodeFilterResult(dst []byte, r *extenderv1.ExtenderFilterResult) ([]byte, error) {
	dst = append(dst, `{"Nodes":`...)
	if r.Nodes == nil {
		dst = append(dst, "null"...)
	} else {
		b, err := json.Marshal(r.Nodes)
		if err != nil {
			return nil, err
		}
		dst = append(dst, b...)
	}
	dst = append(dst, `,"NodeNames":`...)
	if r.NodeNames == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendNames(dst, *r.NodeNames)
	}
	dst = append(dst, `,"FailedNodes":`...)
	dst = appendFailed(dst, r.FailedNodes)
	dst = append(dst, `,"FailedAndUnresolvableNodes":`...)
	dst = appendFailed(dst, r.FailedAndUnresolvableNodes)
	dst = append(dst, `,"Error":`...)
	dst = appendString(dst, r.Error)
	return append(dst, '}'), nil
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
