package main

import (
	"fmt"
	"io"

	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// lineWriter prints progress lines. On a terminal a transient line (a
// replay sample) is redrawn in place by the next sample, and stays when a
// lasting line follows; elsewhere (a log, a pipe) every line stays, one per
// change.
type lineWriter struct {
	w   io.Writer
	tty bool
	// open is true while a transient line is on the screen without its
	// newline.
	open bool
}

func newLineWriter(w io.Writer, tty bool) *lineWriter { return &lineWriter{w: w, tty: tty} }

func (l *lineWriter) write(line migrationclient.Line) {
	if !l.tty {
		fmt.Fprintln(l.w, line.Text)
		return
	}
	switch {
	case l.open && line.Transient:
		fmt.Fprint(l.w, "\r\x1b[K")
	case l.open:
		fmt.Fprintln(l.w)
	}
	if line.Transient {
		fmt.Fprint(l.w, line.Text)
	} else {
		fmt.Fprintln(l.w, line.Text)
	}
	l.open = line.Transient
}

// finish ends a transient line left open.
func (l *lineWriter) finish() {
	if l.open {
		fmt.Fprintln(l.w)
		l.open = false
	}
}
