package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The agent pauses the source's replay sidecar for exactly as long as the
// kubelet's checkpoint takes: it pauses it, checkpoints, and resumes it the
// moment the kubelet answers, then reports the checkpoint offsets O the
// pause answered. Nothing else (no status write, no watch, no controller
// round trip) lies inside the pause. The sidecar lets a node agent pause
// and resume it only from a pod on its own node (see replay.Control), so
// the agent's tokens are bound to its pod, which makes the API server name
// the node in them.

// controlAudience is the audience of tokens for the control API of the
// sidecar in pod namespace/uid: replay.ControlAudience, which the agent
// does not link (TestControlAudienceIsTheSidecars pins them equal).
func controlAudience(namespace, uid string) string {
	return "ms2m-replay/" + namespace + "/" + uid
}

// sidecarPosition is what the agent reads of a sidecar's answer (see
// replay.Position).
type sidecarPosition struct {
	Paused     bool          `json:"paused"`
	Checkpoint map[int]int64 `json:"checkpoint"`
	Assigned   []int         `json:"assigned"`
	PausedAt   *time.Time    `json:"pausedAt"`
	ResumedAt  *time.Time    `json:"resumedAt"`
	PauseSteps *struct {
		Idle    time.Duration `json:"idle"`
		Offsets time.Duration `json:"offsets"`
		Quiesce time.Duration `json:"quiesce"`
	} `json:"pauseSteps"`
}

// maxSidecarAnswer bounds a sidecar's answer: it runs in a tenant's pod.
const maxSidecarAnswer = 1 << 20

// errTryAgain: the source serves on (its sidecar resumed or never paused)
// and the agent tries again shortly, reporting nothing: the group has no
// offsets for the topic yet (it does not exist), or the sidecar could not
// answer for now (no answer, or 503: Kafka unreachable). The controller's
// checkpoint deadline bounds the retries.
var errTryAgain = errors.New("the checkpoint is tried again")

// sidecarError is a sidecar's answer other than 200.
type sidecarError struct {
	status int
	msg    string
}

func (e *sidecarError) Error() string { return e.msg }

// transient says whether a failed call may succeed if made again: no
// answer, or 503.
func transient(err error) bool {
	var se *sidecarError
	return !errors.As(err, &se) || se.status == http.StatusServiceUnavailable
}

// sidecarEndpoint is the source pod's sidecar, checked to run on this node.
func (r *Reconciler) sidecarEndpoint(ctx context.Context, m *v1.StatefulMigration) (addr, audience string, err error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.SourcePod}, pod); err != nil {
		return "", "", fmt.Errorf("source pod %s: %w", m.Spec.SourcePod, err)
	}
	switch {
	case pod.Spec.NodeName != r.Opts.NodeName:
		return "", "", fmt.Errorf("source pod %s runs on node %q, not on this agent's node %s", pod.Name, pod.Spec.NodeName, r.Opts.NodeName)
	case m.Status.SourceUID != "" && pod.UID != m.Status.SourceUID:
		return "", "", fmt.Errorf("source pod %s was replaced (UID %s, the migration's is %s)", pod.Name, pod.UID, m.Status.SourceUID)
	case pod.Status.PodIP == "":
		return "", "", fmt.Errorf("source pod %s has no IP: %w", pod.Name, errTryAgain)
	}
	port := r.Opts.SidecarControlPort
	if port == 0 {
		port = DefaultSidecarControlPort
	}
	return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))), controlAudience(pod.Namespace, string(pod.UID)), nil
}

// PauseTimeout bounds a pause: the sidecar waits for the app's in-flight
// message, and a pause that does not come is tried again (the controller's
// checkpoint deadline bounds the tries).
const PauseTimeout = 10 * time.Second

// DefaultSidecarControlPort is the sidecar's control port the manager
// injects by default (--sidecar-control-port).
const DefaultSidecarControlPort = 9901

// callSidecar makes one control call and decodes the answer.
func (r *Reconciler) callSidecar(ctx context.Context, addr, audience, path string, timeout time.Duration) (sidecarPosition, error) {
	if r.Opts.SidecarTokens == nil {
		return sidecarPosition{}, errors.New("the agent has no credential for the sidecars' control API")
	}
	token, err := r.Opts.SidecarTokens(ctx, audience)
	if err != nil {
		return sidecarPosition{}, err
	}
	// The sidecar bounds the call; a sidecar that never answers (it runs
	// in a tenant's pod) is given up on shortly after.
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]int{"timeoutSeconds": max(int(timeout.Seconds()), 1)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return sidecarPosition{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	c := r.Sidecar
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return sidecarPosition{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSidecarAnswer+1))
	if err != nil {
		return sidecarPosition{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return sidecarPosition{}, &sidecarError{status: resp.StatusCode, msg: fmt.Sprintf("sidecar answered %s: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	if len(b) > maxSidecarAnswer {
		return sidecarPosition{}, fmt.Errorf("sidecar's answer is longer than %d bytes", maxSidecarAnswer)
	}
	var pos sidecarPosition
	if err := json.Unmarshal(b, &pos); err != nil {
		return sidecarPosition{}, fmt.Errorf("sidecar's answer: %w", err)
	}
	return pos, nil
}

// pauseCheckpointResume pauses the source's sidecar, checkpoints the app
// container through the kubelet and resumes the sidecar as soon as the
// runtime lets the container run again (see freezer.go), or else when the
// kubelet answers; it returns the checkpoint's report: the archive, O and
// the pause as the sidecar timed it. A failure after the pause resumes the
// sidecar too: the source serves on. A strategy that stops the source for
// good at its checkpoint (StopAndCopy) leaves it paused after a
// checkpoint that succeeded, for the controller to fence; the report then
// has no ResumedAt.
func (r *Reconciler) pauseCheckpointResume(ctx context.Context, m *v1.StatefulMigration) (v1.AgentResult, error) {
	addr, audience, err := r.sidecarEndpoint(ctx, m)
	if err != nil {
		return v1.AgentResult{}, err
	}
	start := time.Now()
	paused, err := r.callSidecar(ctx, addr, audience, "/pause", PauseTimeout)
	steps := &v1.CheckpointSteps{Pause: metav1.Duration{Duration: time.Since(start)}}
	if err != nil {
		r.resumeSidecar(ctx, addr, audience)
		if transient(err) {
			log.FromContext(ctx).Info("pausing the source's sidecar failed for now; trying again", "migration", m.Name, "error", err.Error())
			return v1.AgentResult{}, fmt.Errorf("pausing the source's sidecar: %w (%w)", err, errTryAgain)
		}
		return v1.AgentResult{}, fmt.Errorf("pausing the source's sidecar: %w", err)
	}
	if len(paused.Checkpoint) == 0 {
		r.resumeSidecar(ctx, addr, audience)
		return v1.AgentResult{}, fmt.Errorf("no offsets to record yet, the topic has none: %w", errTryAgain)
	}
	stops := m.Status.Strategy.StopsForCheckpoint()
	// resumed is the sidecar's answer to a resume at the container's thaw:
	// the source serves again, the kubelet has not answered yet.
	var resumed *sidecarPosition
	var thaw thawReport
	start = time.Now()
	archive, attempts, ckErr := r.checkpointRetrying(ctx, m, func() (string, error) {
		if resumed != nil {
			// The last attempt failed after its thaw resumed the source:
			// the next checkpoint needs its own pause and O.
			again, err := r.callSidecar(ctx, addr, audience, "/pause", PauseTimeout)
			if err != nil || len(again.Checkpoint) == 0 {
				r.resumeSidecar(ctx, addr, audience)
				return "", fmt.Errorf("pausing the source's sidecar again for another checkpoint: %w", cmp.Or(err, errors.New("no offsets")))
			}
			paused, resumed = again, nil
		}
		var watch *thawWatch
		if !stops {
			watch = r.watchContainerThaw(ctx, m, func() error {
				t := time.Now()
				pos, err := r.callSidecar(ctx, addr, audience, "/resume", 10*time.Second)
				if err == nil {
					resumed, steps.Resume.Duration = &pos, time.Since(t)
				}
				return err
			})
		}
		archive, err := r.checkpoint(ctx, m)
		if watch != nil {
			thaw = watch.stop()
		}
		return archive, err
	})
	answered := time.Now()
	steps.Checkpoint, steps.Attempts = metav1.Duration{Duration: answered.Sub(start)}, attempts
	if ps := paused.PauseSteps; ps != nil {
		steps.SidecarIdle, steps.SidecarOffsets, steps.SidecarQuiesce = &metav1.Duration{Duration: ps.Idle}, &metav1.Duration{Duration: ps.Offsets}, &metav1.Duration{Duration: ps.Quiesce}
	}
	res := v1.AgentResult{Archive: archive, Offsets: paused.Checkpoint, Assigned: paused.Assigned, Steps: steps}
	if ckErr == nil && stops {
		res.PausedAt = microTime(paused.PausedAt)
		return res, nil
	}
	if resumed != nil {
		steps.ResumedAtThaw = true
		steps.Frozen = &metav1.Duration{Duration: thaw.ThawedAt.Sub(thaw.FrozenAt)}
		steps.KubeletAfterThaw = &metav1.Duration{Duration: answered.Sub(thaw.ThawedAt)}
	} else {
		if thaw.Err != nil {
			steps.NoThaw = thaw.Err.Error()
		}
		start = time.Now()
		pos, err := r.callSidecar(ctx, addr, audience, "/resume", 10*time.Second)
		steps.Resume.Duration = time.Since(start)
		if err != nil && ckErr != nil {
			r.resumeSidecar(ctx, addr, audience)
		}
		if err != nil && ckErr == nil {
			// The controller's rollback resumes it; the checkpoint is void.
			return v1.AgentResult{}, fmt.Errorf("checkpointed, but resuming the source's sidecar failed: %w", err)
		}
		resumed = &pos
	}
	log.FromContext(ctx).V(1).Info("checkpoint bracket", "migration", m.Name, "steps", steps.String())
	if ckErr != nil {
		return v1.AgentResult{}, ckErr
	}
	if resumed.PausedAt != nil && resumed.ResumedAt != nil {
		res.PausedAt, res.ResumedAt = microTime(resumed.PausedAt), microTime(resumed.ResumedAt)
	}
	return res, nil
}

// watchContainerThaw watches the freezer of the migration's app container
// (see freezer.go) and calls resume at the runtime's thaw. A container
// whose cgroup cannot be found gets a watch that saw nothing and says why
// (the sidecar is then resumed when the kubelet answers).
func (r *Reconciler) watchContainerThaw(ctx context.Context, m *v1.StatefulMigration, resume func() error) *thawWatch {
	h := hostFS{root: cmp.Or(r.Opts.HostRoot, "/")}
	dir, err := r.appCgroup(ctx, h, m)
	if err != nil {
		return stoppedWatch(err)
	}
	events, err := h.resolve(path.Join(dir, "cgroup.events"))
	if err != nil {
		return stoppedWatch(err)
	}
	read := r.readCgroupEvents
	if read == nil {
		read = os.ReadFile
	}
	return watchThaw(func() ([]byte, error) { return read(events) }, resume)
}

// appCgroup is the app container's cgroup directory on the host.
func (r *Reconciler) appCgroup(ctx context.Context, h hostFS, m *v1.StatefulMigration) (string, error) {
	ctr, err := r.appContainer(ctx, m)
	if err != nil {
		return "", err
	}
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.SourcePod}, pod); err != nil {
		return "", err
	}
	return h.containerCgroup(pod, ctr)
}

func microTime(t *time.Time) *metav1.MicroTime {
	if t == nil {
		return nil
	}
	m := metav1.NewMicroTime(*t)
	return &m
}

// resumeSidecar resumes a sidecar this agent may have paused, a few times
// before it leaves that to the controller's rollback.
func (r *Reconciler) resumeSidecar(ctx context.Context, addr, audience string) {
	var err error
	for i := range 3 {
		if _, err = r.callSidecar(ctx, addr, audience, "/resume", 5*time.Second); err == nil {
			return
		}
		t := time.NewTimer(time.Duration(50<<i) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			log.FromContext(ctx).Error(err, "resuming the source's sidecar; the controller's rollback resumes it")
			return
		case <-t.C:
		}
	}
	log.FromContext(ctx).Error(err, "resuming the source's sidecar; the controller's rollback resumes it")
}
