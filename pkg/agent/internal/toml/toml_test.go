package toml

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		keys []string
		want any // nil: the key is not set
	}{
		{"bool in a table", "[crio.runtime]\nenable_criu_support = true\n", []string{"crio", "runtime", "enable_criu_support"}, true},
		{"commented out", "[crio.runtime]\n# enable_criu_support = true\n", []string{"crio", "runtime", "enable_criu_support"}, nil},
		{"comment after the value", "[a]\nb = false # off\n", []string{"a", "b"}, false},
		{"quoted table keys (containerd v2)", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_experimental_restore_via_create = true\n",
			[]string{"plugins", "io.containerd.grpc.v1.cri", "enable_experimental_restore_via_create"}, true},
		{"single-quoted table keys (containerd config dump)", "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_criu = false\n  [plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n",
			[]string{"plugins", "io.containerd.cri.v1.runtime", "enable_criu"}, false},
		{"dotted key", "plugins.\"io.containerd.cri.v1.runtime\".enable_experimental_restore_via_create = true\n",
			[]string{"plugins", "io.containerd.cri.v1.runtime", "enable_experimental_restore_via_create"}, true},
		{"dotted key with spaces", "[crio]\ncheckpoint_restore . container_level_enabled = \"checkpoint_restore\"\n",
			[]string{"crio", "checkpoint_restore", "container_level_enabled"}, "checkpoint_restore"},
		{"inline table", "plugins = { \"io.containerd.cri.v1.runtime\" = { enable_criu = true } }\n",
			[]string{"plugins", "io.containerd.cri.v1.runtime", "enable_criu"}, true},
		{"string escapes", `a = "x\"y\\z\u00e9"` + "\n", []string{"a"}, `x"y\zé`},
		{"literal string", `a = 'C:\no\escape'` + "\n", []string{"a"}, `C:\no\escape`},
		{"multi-line array with comments and a trailing comma", "[crio.runtime]\nconmon_env = [\n  \"PATH=/usr/bin\", # the path\n  'X=1',\n]\nselinux = true\n",
			[]string{"crio", "runtime", "selinux"}, true},
		{"multi-line basic string", "a = \"\"\"\nline one\nline \\\n    two\"\"\"\nb = true\n", []string{"a"}, "line one\nline two"},
		{"multi-line string ending in quotes", "a = '''it's \"quoted\"'''\nb = \"\"\"x\"\"\"\"\"\n", []string{"b"}, `x""`},
		{"a key after a multi-line literal string", "a = '''\n[not.a.table]\nb = 1\n'''\nc = true\n", []string{"c"}, true},
		{"numbers and dates kept as text", "a = 1_000\nb = 1979-05-27 07:32:00\nc = true\n", []string{"b"}, "1979-05-27 07:32:00"},
		{"array of tables", "[[crio.runtime.workloads]]\nname = \"a\"\n[[crio.runtime.workloads]]\nname = \"b\"\n[crio.runtime]\nenable_criu_support = false\n",
			[]string{"crio", "runtime", "enable_criu_support"}, false},
		{"later value wins", "[a]\nb = true\n[a]\nb = false\n", []string{"a", "b"}, false},
		{"CRLF line ends", "[a]\r\nb = true\r\n", []string{"a", "b"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := Lookup(doc, tc.keys...)
			if tc.want == nil {
				if ok {
					t.Fatalf("%s = %v, want it unset", strings.Join(tc.keys, "."), got)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("%s = %#v, want %#v", strings.Join(tc.keys, "."), got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, line string }{
		{"unclosed header", "a = 1\n[crio.runtime\n", "line 2"},
		{"missing =", "[a]\nb true\n", "line 2"},
		{"unclosed string", "a = \"x\nb = 1\n", "line 1"},
		{"unclosed array", "a = [1, 2\n", "line 2"},
		{"two values on a line", "a = 1 b = 2\n", "line 1"},
		{"value redefined as a table", "a = 1\n[a.b]\n", "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.line) {
				t.Fatalf("error %v, want one at %s", err, tc.line)
			}
		})
	}
}
