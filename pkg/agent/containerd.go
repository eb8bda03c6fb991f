package agent

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// containerd's configuration: config.toml, then the files its imports
// name (globs allowed, relative to the importing file), breadth first, a
// later file's value overriding an earlier one's, as containerd loads
// them. Without config.toml, containerd 2.x imports conf.d/*.toml.
const (
	containerdConfig         = "/etc/containerd/config.toml"
	containerdDefaultImports = "/etc/containerd/conf.d/*.toml"
)

// The CRI plugin's section: io.containerd.cri.v1.runtime in a version 3
// file (containerd 2.x), io.containerd.grpc.v1.cri in a version 2 file and
// cri in a version 1 file, which containerd 2.x migrates when it loads
// them. A file's newest section wins.
var containerdCRISections = []string{"io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"}

// containerd restores a container when the kubelet creates it from a
// checkpoint image ("restore in CreateContainer"):
//   - added in 2.1 (containerd/containerd#10365);
//   - enable_criu (default true) turns checkpoint and restore off when
//     false (2.2.7, 2.3.4; #13795, #13734);
//   - off by default since 2.2.7 and 2.3.4, on again with
//     enable_experimental_restore_via_create = true (#13913, #13937);
//   - deprecated in 2.3 and removed in 2.4 (#13838, #13871), for the
//     pod-level RestorePod API.
const (
	containerdEnableCRIU    = "enable_criu"
	containerdRestoreCreate = "enable_experimental_restore_via_create"
)

// containerdProblems explains why containerd, as configured, does not
// restore.
func (h hostFS) containerdProblems(v version, raw string) []string {
	switch {
	case v.ok && v.less(2, 1, 0):
		return []string{fmt.Sprintf("containerd %s cannot restore through the CRI (restore in CreateContainer arrived in containerd 2.1)", raw)}
	case v.ok && !v.less(2, 4, 0):
		return []string{fmt.Sprintf("containerd %s no longer restores in CreateContainer (deprecated in 2.3, removed in 2.4): run containerd 2.3 with %s = true, or CRI-O 1.37 or later, on the nodes migrations go to", raw, containerdRestoreCreate)}
	}
	files, err := h.containerdFiles()
	if err != nil {
		return []string{"containerd: " + err.Error()}
	}
	criu, restore, err := h.containerdSettings(files)
	if err != nil {
		return []string{"containerd: " + err.Error()}
	}
	var problems []string
	if criu.set && criu.value != true {
		problems = append(problems, fmt.Sprintf("containerd: %s = %#v (%s): set it to true", containerdEnableCRIU, criu.value, criu.file))
	}
	// Releases before 2.2.7 and 2.3.4 restore without the opt-in; an
	// unknown version must have it, as the current releases.
	optIn := !v.ok || (v.major == 2 && (v.minor == 2 && v.patch >= 7 || v.minor == 3 && v.patch >= 4))
	switch {
	case !optIn || restore.value == true:
	case restore.set:
		problems = append(problems, fmt.Sprintf("containerd: %s = %#v (%s): set it to true", containerdRestoreCreate, restore.value, restore.file))
	default:
		problems = append(problems, fmt.Sprintf(`containerd %s has %s off by default (since 2.2.7 and 2.3.4): set it to true in [plugins."io.containerd.cri.v1.runtime"]`, raw, containerdRestoreCreate))
	}
	return problems
}

// containerdFiles lists the configuration files in the order containerd
// loads them.
func (h hostFS) containerdFiles() ([]string, error) {
	if _, err := h.stat(containerdConfig); isNotExist(err) {
		return h.glob(containerdDefaultImports)
	}
	var files []string
	loaded := map[string]bool{}
	pending := []string{containerdConfig}
	for len(pending) > 0 {
		f := pending[0]
		pending = pending[1:]
		if loaded[f] {
			continue
		}
		loaded[f] = true
		files = append(files, f)
		doc, err := h.readTOML(f, decodeContainerdConfig)
		if err != nil {
			return nil, err
		}
		imports, _ := lookup(doc, "imports")
		list, _ := imports.([]any)
		for _, imp := range list {
			s, ok := imp.(string)
			if !ok {
				return nil, fmt.Errorf("%s: imports holds %#v, not a path", f, imp)
			}
			if !path.IsAbs(s) {
				s = path.Join(path.Dir(f), s)
			}
			if !strings.ContainsAny(s, `*?[`) {
				pending = append(pending, s)
				continue
			}
			matches, err := h.glob(s)
			if err != nil {
				return nil, fmt.Errorf("%s: imports %q: %w", f, s, err)
			}
			pending = append(pending, matches...)
		}
	}
	return files, nil
}

// containerdSettings reads enable_criu and
// enable_experimental_restore_via_create from the CRI section of each file.
func (h hostFS) containerdSettings(files []string) (criu, restore setting, err error) {
	for _, f := range files {
		doc, err := h.readTOML(f, decodeContainerdConfig)
		if err != nil {
			return setting{}, setting{}, err
		}
		for _, out := range []struct {
			key string
			s   *setting
		}{{containerdEnableCRIU, &criu}, {containerdRestoreCreate, &restore}} {
			for _, section := range containerdCRISections {
				if v, ok := lookup(doc, "plugins", section, out.key); ok {
					*out.s = setting{set: true, value: v, file: f}
					break
				}
			}
		}
	}
	return criu, restore, nil
}

// decodeContainerdConfig decodes a containerd configuration file with the
// TOML library containerd reads it with (github.com/pelletier/go-toml/v2).
func decodeContainerdConfig(data []byte) (map[string]any, error) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, _ := derr.Position()
			return nil, fmt.Errorf("line %d: %w", row, err)
		}
		return nil, err
	}
	return doc, nil
}
