package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
)

const testContainerID = "4f1c9d0e2b7a8c6d5e3f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"

// The cgroup of a container is found where the kubelet and each runtime put
// it, whatever the cgroup driver and the pod's QoS class.
func TestTheContainersCgroupIsFoundWhereTheRuntimePutsIt(t *testing.T) {
	uid := types.UID("6a2f0c1e-8b3d-4e5f-9a7b-1c2d3e4f5a6b")
	under := "6a2f0c1e_8b3d_4e5f_9a7b_1c2d3e4f5a6b"
	for name, tc := range map[string]struct{ scheme, dir string }{
		"CRI-O, systemd, crun (its default)": {"cri-o", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/crio-" + testContainerID + ".scope/container"},
		"CRI-O, systemd, runc":               {"cri-o", "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/crio-" + testContainerID + ".scope"},
		"CRI-O, cgroupfs":                    {"cri-o", "kubepods/burstable/pod" + string(uid) + "/crio-" + testContainerID},
		"containerd, systemd, Guaranteed":    {"containerd", "kubepods.slice/kubepods-pod" + under + ".slice/cri-containerd-" + testContainerID + ".scope"},
		"containerd, cgroupfs":               {"containerd", "kubepods/besteffort/pod" + string(uid) + "/" + testContainerID},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeEvents(t, filepath.Join(root, "sys/fs/cgroup", tc.dir), false)
			pod := &corev1.Pod{}
			pod.Name, pod.UID = "orders", uid
			pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", ContainerID: tc.scheme + "://" + testContainerID}}
			got, err := hostFS{root: root}.containerCgroup(pod, "app")
			if err != nil || got != "/sys/fs/cgroup/"+tc.dir {
				t.Fatalf("cgroup %q (%v); want /sys/fs/cgroup/%s", got, err, tc.dir)
			}
			pod.Status.ContainerStatuses[0].ContainerID = tc.scheme + "://" + strings.Repeat("0", 64)
			if got, err := (hostFS{root: root}).containerCgroup(pod, "app"); err == nil {
				t.Fatalf("another container's ID found %s", got)
			}
		})
	}
}

func writeEvents(t *testing.T, dir string, frozen bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := 0
	if frozen {
		v = 1
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.events"), fmt.Appendf(nil, "populated 1\nfrozen %d\n", v), 0o644); err != nil {
		t.Fatal(err)
	}
}

// freezerWorld is a checkpointWorld whose FAKE kubelet drives the app
// container's freezer through the states a runtime's checkpoint shows, each
// read by the agent's watch before the next (a handshake, not a clock).
type freezerWorld struct {
	*checkpointWorld
	states chan bool // the kubelet's next freezer state, taken by a read
	// answer is the kubelet's answer once the runtime resumed the
	// container (the archive written).
	answer func(http.ResponseWriter)
}

func newFreezerWorld(t *testing.T, initiallyFrozen bool, checkpoint []bool, resumedFirst bool) *freezerWorld {
	w := &freezerWorld{checkpointWorld: newCheckpointWorld(t, "node-1"), states: make(chan bool)}
	root := t.TempDir()
	writeEvents(t, filepath.Join(root, "sys/fs/cgroup/kubepods/burstable/poduid-orders", testContainerID), initiallyFrozen)
	w.r.Opts.HostRoot = root
	pod := &corev1.Pod{}
	if err := w.api.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "orders"}, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + testContainerID}}
	if err := w.api.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	current := initiallyFrozen
	w.r.readCgroupEvents = func(string) ([]byte, error) {
		select {
		case current = <-w.states:
		default:
		}
		v := 0
		if current {
			v = 1
		}
		return fmt.Appendf(nil, "populated 1\nfrozen %d\n", v), nil
	}
	w.answer = w.kubelet
	resumes := func() int {
		n := 0
		for _, c := range w.called() {
			if c == "/resume" {
				n++
			}
		}
		return n
	}
	w.kubelet = func(rw http.ResponseWriter) {
		before := resumes()
		for _, s := range checkpoint {
			select {
			case w.states <- s:
			case <-time.After(expect.Timeout):
				t.Errorf("the agent's watch did not read the freezer state %v", s)
			}
		}
		// The runtime has resumed the container; the archive is written
		// now (here: until the agent resumed the sidecar, or at most
		// expect.Timeout), and the kubelet answers once it is.
		if resumedFirst {
			deadline := time.Now().Add(expect.Timeout)
			for resumes() == before && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond) // polling the FAKE sidecar's record
			}
		}
		w.record("answered")
		w.answer(rw)
	}
	return w
}

// The source's sidecar is resumed when the runtime lets the container run
// again (the second thaw: the runtime's pause, CRIU's own thaw while it
// holds the processes, CRIU's refreeze, the runtime's resume), not when the
// kubelet answers after writing the archive; never at CRIU's thaw, while
// the dump runs.
func TestTheSourceResumesWhenTheRuntimeThawsTheContainer(t *testing.T) {
	w := newFreezerWorld(t, false, []bool{true, false, true, false}, true)
	_, report, ok := w.reconcile()
	if !ok || report.Error != "" {
		t.Fatalf("report %+v (%v)", report, ok)
	}
	if calls := w.called(); !slices.Equal(calls, []string{"/pause", "checkpoint", "/resume", "answered"}) {
		t.Fatalf("calls %v; want the sidecar resumed before the kubelet answered", calls)
	}
	st := report.Steps
	if st == nil || !st.ResumedAtThaw || st.Frozen == nil || st.Frozen.Duration <= 0 || st.KubeletAfterThaw == nil || st.NoThaw != "" {
		t.Fatalf("steps %+v; want the resume at the thaw, with the freeze and the kubelet's lag after it", st)
	}
	if !strings.Contains(st.String(), "resumed at its thaw") {
		t.Fatalf("steps read %q", st.String())
	}
	if report.PausedAt == nil || report.ResumedAt == nil {
		t.Fatalf("report %+v; want the pause as the sidecar's resume answered it", report)
	}
}

// Where the watch cannot tell the runtime's resume from CRIU's thaw, the
// sidecar stays paused until the kubelet answers, and the report says why.
func TestTheSourceStaysPausedUntilTheKubeletAnswersWhenTheThawIsUnclear(t *testing.T) {
	for name, tc := range map[string]struct {
		frozen bool
		states []bool
		why    string
	}{
		"a runtime that does not pause (CRIU's thaw only)": {states: []bool{true, false}, why: "1 thaw(s) seen"},
		"frozen before the checkpoint":                     {frozen: true, why: "frozen before the checkpoint"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newFreezerWorld(t, tc.frozen, tc.states, false)
			_, report, ok := w.reconcile()
			if !ok || report.Error != "" {
				t.Fatalf("report %+v (%v)", report, ok)
			}
			if calls := w.called(); !slices.Equal(calls, []string{"/pause", "checkpoint", "answered", "/resume"}) {
				t.Fatalf("calls %v; want the sidecar resumed after the kubelet answered", calls)
			}
			if st := report.Steps; st == nil || st.ResumedAtThaw || !strings.Contains(st.NoThaw, tc.why) {
				t.Fatalf("steps %+v; want no resume at a thaw, because %q", st, tc.why)
			}
		})
	}
}

// A checkpoint CRIU refused after the runtime's resume (the cgroup shows
// the same four states: CRIU restores the freezer, the runtime resumes the
// container) has resumed the source; the next attempt pauses it again and
// records that pause's O, not the first's.
func TestACheckpointTriedAgainAfterAThawPausesTheSourceAgain(t *testing.T) {
	w := newFreezerWorld(t, false, []bool{true, false, true, false}, true)
	succeed, attempts := w.answer, 0
	w.answer = func(rw http.ResponseWriter) {
		if attempts++; attempts == 1 {
			w.offsets = `{"0":121,"1":98}` // the source processed one more after its resume
			http.Error(rw, "checkpointing of shop/orders/app failed (CRIU: Connected TCP socket, consider using --tcp-established option)", http.StatusInternalServerError)
			return
		}
		succeed(rw)
	}
	_, report, ok := w.reconcile()
	if !ok || report.Error != "" {
		t.Fatalf("report %+v (%v)", report, ok)
	}
	want := []string{"/pause", "checkpoint", "/resume", "answered", "/pause", "checkpoint", "/resume", "answered"}
	if calls := w.called(); !slices.Equal(calls, want) {
		t.Fatalf("calls %v; want %v", calls, want)
	}
	if report.Offsets[0] != 121 || report.Steps == nil || report.Steps.Attempts != 2 || !report.Steps.ResumedAtThaw {
		t.Fatalf("report %+v (steps %v); want the second pause's O, 2 attempts, resumed at the thaw", report, report.Steps)
	}
}
