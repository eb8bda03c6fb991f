package agent

import "fmt"

// setting is a configuration key's effective value, and the file that set
// it.
type setting struct {
	set   bool
	value any
	file  string
}

// readTOML decodes a host file with decode; a missing file is an empty
// document. decode is the TOML library the file's runtime reads it with
// (decodeCRIOConfig, decodeContainerdConfig), so the agent accepts and
// refuses what the runtime does: a file the runtime would not start with is
// reported, naming the file and line, rather than guessed at.
func (h hostFS) readTOML(f string, decode func([]byte) (map[string]any, error)) (map[string]any, error) {
	data, err := h.readFile(f)
	if isNotExist(err) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, err
	}
	doc, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	return doc, nil
}

// lookup returns the value at the key path of a decoded document (tables
// are map[string]any), and whether it is set.
func lookup(doc map[string]any, keys ...string) (any, bool) {
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
