package main

import (
	"bytes"
	"testing"

	"github.com/ms2m/ms2m/pkg/migrationclient"
)

func TestLineWriter(t *testing.T) {
	lines := []migrationclient.Line{
		{Text: "Replaying"},
		{Text: "lag 600", Transient: true},
		{Text: "lag 30", Transient: true},
		{Text: "Finalizing"},
		{Text: "lag 0", Transient: true},
	}
	for _, tc := range []struct {
		name string
		tty  bool
		want string
	}{
		{"terminal: a sample redraws the previous one and stays when a phase follows", true,
			"Replaying\nlag 600\r\x1b[Klag 30\nFinalizing\nlag 0\n"},
		{"pipe: one line per change", false,
			"Replaying\nlag 600\nlag 30\nFinalizing\nlag 0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := newLineWriter(&b, tc.tty)
			for _, l := range lines {
				w.write(l)
			}
			w.finish()
			if b.String() != tc.want {
				t.Errorf("wrote %q\nwant  %q", b.String(), tc.want)
			}
		})
	}
}
