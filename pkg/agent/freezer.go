package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The source's checkpoint pause need last only as long as the runtime
// holds the app container still. The kubelet answers later: CRI-O (1.29+)
// pauses the container with the cgroup freezer, has CRIU dump it, writes
// the archive and only then resumes it; containerd resumes it once the dump
// and the rootfs diff are taken and writes the archive (the whole memory,
// again) while it runs. Inside either, CRIU seizes the processes with
// ptrace and thaws the cgroup, then puts it back to frozen when it lets
// them go. So the container's cgroup shows, during one checkpoint:
//
//	frozen 1 (the runtime's pause), 0 (CRIU holds the processes itself),
//	1 (CRIU done), 0 (the runtime's resume: the app runs again)
//
// The agent watches the cgroup (cgroup v2's cgroup.events) and resumes the
// sidecar at the second thaw: from then on the app runs, and what it does
// is after the checkpoint. It never resumes at the first: CRIU is still
// dumping then, and a message delivered meanwhile could land in the
// checkpoint (a socket's queue, or an in-flight connection CRIU refuses).
// A runtime that does not pause the container (CRI-O before 1.29) shows
// one thaw only; and a watch that misses one of the four changes sees at
// most one thaw: the sidecar is then resumed when the kubelet answers, as
// without a watch.

// cgroupRoot is cgroup v2's mount on the host.
const cgroupRoot = "/sys/fs/cgroup"

// thawPoll is how often the watch reads cgroup.events: the kernel does
// notify changes, but at most 100 a second, merging faster ones, so the
// file is read anyway.
const thawPoll = time.Millisecond

// containerCgroup finds the cgroup v2 directory of the pod's container on
// the host, as the kubelet and the runtime name it: kubepods.slice/
// kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<crio|cri-containerd>-<id>.scope
// with the systemd cgroup driver, kubepods/<qos>/pod<uid>/[crio-]<id> with
// cgroupfs (Guaranteed pods have no <qos> level); crun's "container" leaf
// in a CRI-O scope is where the processes are, and what is frozen.
func (h hostFS) containerCgroup(pod *corev1.Pod, container string) (string, error) {
	id := ""
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == container {
			_, id, _ = strings.Cut(s.ContainerID, "://")
		}
	}
	if id == "" || strings.ContainsAny(id, "/.") {
		return "", fmt.Errorf("container %s of pod %s has no container ID in its status", container, pod.Name)
	}
	uid := string(pod.UID)
	if strings.ContainsAny(uid, "/.") {
		return "", fmt.Errorf("pod %s: UID %q", pod.Name, uid)
	}
	var pods []string
	systemdUID := strings.ReplaceAll(uid, "-", "_")
	pods = append(pods, path.Join("kubepods.slice", "kubepods-pod"+systemdUID+".slice"), path.Join("kubepods", "pod"+uid))
	for _, qos := range []string{"burstable", "besteffort"} {
		pods = append(pods,
			path.Join("kubepods.slice", "kubepods-"+qos+".slice", "kubepods-"+qos+"-pod"+systemdUID+".slice"),
			path.Join("kubepods", qos, "pod"+uid))
	}
	for _, p := range pods {
		for _, c := range []string{"crio-" + id + ".scope/container", "crio-" + id + ".scope", "cri-containerd-" + id + ".scope", "crio-" + id, id} {
			dir := path.Join(cgroupRoot, p, c)
			if _, err := h.stat(path.Join(dir, "cgroup.events")); err == nil {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("no cgroup v2 of container %s (ID %s) of pod %s under %s", container, id, pod.Name, cgroupRoot)
}

// frozenIn reads the "frozen" key of a cgroup.events file.
func frozenIn(events []byte) (bool, error) {
	for line := range bytes.Lines(events) {
		if v, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("frozen ")); ok {
			return string(v) == "1", nil
		}
	}
	return false, errors.New(`no "frozen" in cgroup.events`)
}

// thawWatch watches a container's freezer during one checkpoint call.
type thawWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	frozenAt time.Time // the first freeze seen
	thawedAt time.Time // the second thaw seen
	onThaw   error     // what the second thaw's callback returned
	thaws    int
	err      error // why the watch stopped early
}

// watchThaw reads the freezer state every thawPoll until stopped, and calls
// onThaw once, at the second thaw after a freeze it saw begin (see above).
// It does nothing (and says why) if the container is frozen when it
// starts: that freeze is not the checkpoint's.
func watchThaw(read func() ([]byte, error), onThaw func() error) *thawWatch {
	look := func() (bool, error) {
		b, err := read()
		if err != nil {
			return false, err
		}
		return frozenIn(b)
	}
	// The first look is taken before the kubelet is called.
	was, err := look()
	switch {
	case err != nil:
		return stoppedWatch(err)
	case was:
		return stoppedWatch(errors.New("the container was frozen before the checkpoint"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &thawWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(thawPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			frozen, err := look()
			if err != nil {
				w.stopped(err)
				return
			}
			switch {
			case frozen && !was:
				w.mu.Lock()
				if w.frozenAt.IsZero() {
					w.frozenAt = time.Now()
				}
				w.mu.Unlock()
			case !frozen && was:
				w.mu.Lock()
				w.thaws++
				second := w.thaws == 2
				if second {
					w.thawedAt = time.Now()
				}
				w.mu.Unlock()
				if second {
					err := onThaw()
					w.mu.Lock()
					w.onThaw = err
					w.mu.Unlock()
					return
				}
			}
			was = frozen
		}
	}()
	return w
}

// stoppedWatch is a watch that could not start.
func stoppedWatch(err error) *thawWatch {
	w := &thawWatch{cancel: func() {}, done: make(chan struct{}), err: err}
	close(w.done)
	return w
}

func (w *thawWatch) stopped(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// thawReport is what a watch saw.
type thawReport struct {
	// FrozenAt and ThawedAt: the first freeze and the runtime's final
	// thaw (zero if not seen).
	FrozenAt, ThawedAt time.Time
	// Resumed: the callback ran at the thaw and succeeded.
	Resumed bool
	// Why the watch saw no final thaw, or the callback's error.
	Err error
}

// stop ends the watch (waiting for a callback under way) and says what it
// saw.
func (w *thawWatch) stop() thawReport {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	r := thawReport{FrozenAt: w.frozenAt, ThawedAt: w.thawedAt, Err: w.err}
	switch {
	case !w.thawedAt.IsZero() && w.onThaw == nil:
		r.Resumed = true
	case !w.thawedAt.IsZero():
		r.Err = w.onThaw
	case r.Err == nil && w.frozenAt.IsZero():
		r.Err = errors.New("no freeze seen")
	case r.Err == nil:
		r.Err = fmt.Errorf("%d thaw(s) seen, not the runtime's resume after CRIU's", w.thaws)
	}
	return r
}
