package agent

import (
	"errors"
	"fmt"

	"github.com/BurntSushi/toml"
)

// CRI-O's configuration: the main file, then every file under the drop-in
// directory in lexical order, a later file's value overriding an earlier
// one's (crio.conf(5), "crio.conf.d"). Command-line flags and environment
// variables of the crio service override them and are not visible here.
const (
	crioConfig    = "/etc/crio/crio.conf"
	crioConfigDir = "/etc/crio/crio.conf.d"
)

// CRI-O's two switches for restoring containers.
//
// [crio.runtime] enable_criu_support turns CRIU on (checkpoint and
// restore). It defaults to true since CRI-O 1.30 (cri-o/cri-o#7846), to
// false before, and is deprecated in favour of the second switch.
//
// [crio.checkpoint_restore] container_level_enabled is "none",
// "checkpoint_only" or "checkpoint_restore" (cri-o/cri-o#10248). Before
// 1.37 the releases that have it default it to "checkpoint_only": restore
// is off unless it says "checkpoint_restore"; 1.37.0 and later default it
// to "checkpoint_restore". It arrived in 1.34.14, 1.35.9 and
// 1.36.6 and is in every later minor release; it was also backported to
// the 1.30 to 1.33 branches (#10336 to #10339) in releases this code does
// not know, so there the agent asks for the setting explicitly (releases
// without the option ignore it: CRI-O ignores unknown keys).
var (
	crioCRIUSupport = []string{"crio", "runtime", "enable_criu_support"}
	crioLevel       = []string{"crio", "checkpoint_restore", "container_level_enabled"}
)

const crioLevelRestore = "checkpoint_restore"

// crioLevelSince is the first patch release of each minor release
// where container_level_enabled exists (and defaults to "checkpoint_only").
// From 1.37.0 it defaults to "checkpoint_restore".
var crioLevelSince = map[int]int{34: 14, 35: 9, 36: 6}

// crioLevelDefault is what an unset container_level_enabled means in a
// release: restore on (the option does not exist), off, or not known.
type crioLevelDefault int

const (
	crioNoLevel crioLevelDefault = iota
	crioLevelCheckpointOnly
	crioLevelMaybe
	crioLevelRestoreByDefault
)

func crioLevelDefaultIn(v version) crioLevelDefault {
	switch {
	case !v.ok:
		return crioLevelMaybe
	case v.less(1, 30, 0):
		return crioNoLevel
	case v.major == 1 && v.minor <= 33:
		return crioLevelMaybe
	case v.major == 1 && v.minor <= 36:
		if v.patch < crioLevelSince[v.minor] {
			return crioNoLevel
		}
		return crioLevelCheckpointOnly
	}
	return crioLevelRestoreByDefault
}

// crioProblems explains why CRI-O, as configured, does not restore.
func (h hostFS) crioProblems(v version, raw string) []string {
	files, err := h.files(crioConfigDir)
	if err != nil {
		return []string{fmt.Sprintf("CRI-O: reading %s: %v", crioConfigDir, err)}
	}
	cfg, err := h.readCRIOConfig(append([]string{crioConfig}, files...), crioCRIUSupport, crioLevel)
	if err != nil {
		return []string{"CRI-O: " + err.Error()}
	}
	var problems []string
	switch s := cfg[0]; {
	case s.set && s.value != true:
		problems = append(problems, fmt.Sprintf("CRI-O: [crio.runtime] enable_criu_support = %#v (%s): set it to true", s.value, s.file))
	case !s.set && v.ok && v.less(1, 30, 0):
		problems = append(problems, fmt.Sprintf("CRI-O %s has [crio.runtime] enable_criu_support off by default: set it to true", raw))
	}
	switch s := cfg[1]; {
	case s.set && s.value == crioLevelRestore:
	case s.set && s.value == "checkpoint_only":
		problems = append(problems, fmt.Sprintf(`CRI-O: [crio.checkpoint_restore] container_level_enabled = "checkpoint_only" (%s) allows checkpoints but no restore: set it to %q`, s.file, crioLevelRestore))
	case s.set:
		problems = append(problems, fmt.Sprintf(`CRI-O: [crio.checkpoint_restore] container_level_enabled = %#v (%s) does not allow restore: set it to %q`, s.value, s.file, crioLevelRestore))
	default:
		switch crioLevelDefaultIn(v) {
		case crioLevelCheckpointOnly:
			problems = append(problems, fmt.Sprintf(`CRI-O %s defaults [crio.checkpoint_restore] container_level_enabled to "checkpoint_only" (no restore): set it to %q`, raw, crioLevelRestore))
		case crioLevelMaybe:
			problems = append(problems, fmt.Sprintf(`CRI-O %s may default [crio.checkpoint_restore] container_level_enabled to "checkpoint_only" (no restore; releases since September 2026 do): set it to %q (releases without the option ignore it)`, raw, crioLevelRestore))
		}
	}
	return problems
}

// readCRIOConfig reads CRI-O's files in order, a missing one skipped, and
// returns each key's value from the last file that sets it.
func (h hostFS) readCRIOConfig(files []string, keys ...[]string) ([]setting, error) {
	out := make([]setting, len(keys))
	for _, f := range files {
		doc, err := h.readTOML(f, decodeCRIOConfig)
		if err != nil {
			return nil, err
		}
		for i, k := range keys {
			if v, ok := lookup(doc, k...); ok {
				out[i] = setting{set: true, value: v, file: f}
			}
		}
	}
	return out, nil
}

// decodeCRIOConfig decodes a CRI-O configuration file with the TOML
// library CRI-O reads it with (github.com/BurntSushi/toml).
func decodeCRIOConfig(data []byte) (map[string]any, error) {
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("line %d: %s", perr.Position.Line, perr.Message)
		}
		return nil, err
	}
	return doc, nil
}
