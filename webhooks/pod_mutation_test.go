package webhooks

import (
	"cmp"
	"context"
	"encoding/json"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/pkg/replay"
)

// podOption tweaks a test pod.
type podOption func(*corev1.Pod)

func withAnnotation(k, v string) podOption {
	return func(p *corev1.Pod) { p.Annotations[k] = v }
}

func withoutAnnotation(k string) podOption {
	return func(p *corev1.Pod) { delete(p.Annotations, k) }
}

// migratablePod is a pod with a complete, valid Kafka binding.
func migratablePod(opts ...podOption) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "consumer-0", Namespace: "default", Annotations: map[string]string{
			v1.AnnotationMigratable:   "true",
			v1.AnnotationKafkaBrokers: "kafka-0.kafka:9092, 10.0.0.7:9093",
			v1.AnnotationKafkaTopic:   "orders",
			v1.AnnotationKafkaGroup:   "aggregator",
			v1.AnnotationAppPort:      "8080",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/consumer:1"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return "<unset>"
}

// sidecarGetenv is the environment of the mutated pod's sidecar as the
// kubelet gives it: values, and the downward API's fields of a pod with IP
// 10.0.0.9, namespace shop and UID 1234 (when the pod names none).
func sidecarGetenv(pod *corev1.Pod) func(string) string {
	return func(k string) string {
		for _, e := range pod.Spec.Containers[1].Env {
			if e.Name != k {
				continue
			}
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
				return e.Value
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.podIP":
				return "10.0.0.9"
			case "metadata.name":
				return pod.Name
			case "metadata.namespace":
				return cmp.Or(pod.Namespace, "shop")
			case "metadata.uid":
				return cmp.Or(string(pod.UID), "1234")
			}
		}
		return ""
	}
}

func TestMutateInjectsSidecarAndAnnotation(t *testing.T) {
	pod := migratablePod(withAnnotation(v1.AnnotationDeliveryPath, "/v1/events"))
	if errs := Mutate(pod, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatalf("valid pod refused: %v", errs)
	}
	if len(pod.Spec.Containers) != 2 || pod.Spec.Containers[0].Name != "app" {
		t.Fatalf("containers = %v; want the app untouched and the sidecar appended", pod.Spec.Containers)
	}
	sc := pod.Spec.Containers[1]
	if sc.Name != v1.SidecarContainerName || sc.Image != DefaultSidecarOptions().Image {
		t.Errorf("sidecar = %s (%s)", sc.Name, sc.Image)
	}
	for k, want := range map[string]string{
		"MS2M_KAFKA_BROKERS": "kafka-0.kafka:9092,10.0.0.7:9093",
		"MS2M_KAFKA_TOPIC":   "orders",
		"MS2M_KAFKA_GROUP":   "aggregator",
		"MS2M_APP_PORT":      "8080",
		"MS2M_DELIVERY_PATH": "/v1/events",
		"MS2M_CONTROL_PORT":  "9901",
	} {
		if got := envOf(sc, k); got != want {
			t.Errorf("sidecar env %s = %q, want %q", k, got, want)
		}
	}
	if sc.ReadinessProbe == nil || sc.ReadinessProbe.HTTPGet == nil || sc.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("sidecar readiness must follow its live mode (/readyz): %+v", sc.ReadinessProbe)
	}
	if pod.Annotations[v1.AnnotationCheckpointRestore] != "enabled" {
		t.Errorf("checkpoint-restore annotation = %q", pod.Annotations[v1.AnnotationCheckpointRestore])
	}
	expectSchedulerMarker(t, sc)
}

// expectSchedulerMarker: the sidecar requests one ms2m.io/checkpoint-restore
// (requests equal to limits, as the API server demands for extended
// resources), which is what sends the pod to the ms2m scheduler extender.
func expectSchedulerMarker(t *testing.T, sc corev1.Container) {
	t.Helper()
	name := corev1.ResourceName(v1.ResourceCheckpointRestore)
	req, lim := sc.Resources.Requests[name], sc.Resources.Limits[name]
	if req.Value() != 1 || lim.Value() != 1 {
		t.Errorf("sidecar %s request/limit = %s/%s; want 1/1 so the scheduler calls the ms2m extender", name, req.String(), lim.String())
	}
	if sc.Resources.Requests.Cpu().IsZero() || sc.Resources.Requests.Memory().IsZero() {
		t.Errorf("sidecar lost its cpu/memory requests: %v", sc.Resources.Requests)
	}
}

// mutatedSidecarOptions mutates pod and reads the injected sidecar's
// configuration as the sidecar does, on pod IP 10.0.0.9.
func mutatedSidecarOptions(t *testing.T, pod *corev1.Pod) replay.Options {
	t.Helper()
	if errs := Mutate(pod, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	o, err := replay.OptionsFromEnv(sidecarGetenv(pod))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// An app's opt-in to be told before a checkpoint reaches the sidecar as the
// URL it POSTs to; without it the sidecar tells the app nothing.
func TestMutatePassesTheQuiescePathToTheSidecar(t *testing.T) {
	for path, want := range map[string]string{"/ms2m/quiesce": "http://10.0.0.9:8080/ms2m/quiesce", "": ""} {
		pod := migratablePod()
		if path != "" {
			pod = migratablePod(withAnnotation(v1.AnnotationAppQuiescePath, path))
		}
		if o := mutatedSidecarOptions(t, pod); o.QuiesceURL != want {
			t.Errorf("%s=%q: the sidecar tells the app at %q, want %q", v1.AnnotationAppQuiescePath, path, o.QuiesceURL, want)
		}
	}
}

// The poison-message policy reaches the sidecar: the annotations' values,
// or the sidecar's defaults, and a dead-letter topic that is the consumed
// topic itself is refused (its messages would come back).
func TestMutatePassesThePoisonPolicyToTheSidecar(t *testing.T) {
	pod := migratablePod(withAnnotation(v1.AnnotationMaxDeliveryAttempts, "7"), withAnnotation(v1.AnnotationDeadLetterTopic, "orders-dlq"))
	if errs := Mutate(pod, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	sc := pod.Spec.Containers[1]
	if got := envOf(sc, replay.EnvMaxAttempts); got != "7" {
		t.Errorf("%s = %q, want 7", replay.EnvMaxAttempts, got)
	}
	if got := envOf(sc, replay.EnvDeadLetterTopic); got != "orders-dlq" {
		t.Errorf("%s = %q, want orders-dlq", replay.EnvDeadLetterTopic, got)
	}
	if o := mutatedSidecarOptions(t, migratablePod()); o.MaxAttempts != replay.DefaultMaxAttempts || o.DeadLetterTopic != replay.DefaultDeadLetterTopic(o.Topic) {
		t.Errorf("defaults: %d attempts, topic %q", o.MaxAttempts, o.DeadLetterTopic)
	}
	self := migratablePod()
	self.Annotations[v1.AnnotationDeadLetterTopic] = self.Annotations[v1.AnnotationKafkaTopic]
	errs := Mutate(self, DefaultSidecarOptions())
	if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), v1.AnnotationDeadLetterTopic) {
		t.Errorf("the consumed topic as dead-letter topic: %v; want an error naming %s", errs, v1.AnnotationDeadLetterTopic)
	}
}

// An app that opts in to batches gets them from its sidecar; one that does
// not gets one message per POST, as before batches existed.
func TestMutatePassesTheAppBatchSizeToTheSidecar(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"opted in", migratablePod(withAnnotation(v1.AnnotationAppBatchSize, "64")), "64"},
		{"not opted in", migratablePod(), "<unset>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if errs := Mutate(tc.pod, DefaultSidecarOptions()); len(errs) > 0 {
				t.Fatal(errs)
			}
			if got := envOf(tc.pod.Spec.Containers[1], replay.EnvAppBatchSize); got != tc.want {
				t.Fatalf("sidecar %s = %q, want %q", replay.EnvAppBatchSize, got, tc.want)
			}
			o, err := replay.OptionsFromEnv(sidecarGetenv(tc.pod))
			if err != nil {
				t.Fatalf("the sidecar refuses the environment the webhook gave it: %v", err)
			}
			if want := map[string]int{"64": 64, "<unset>": 1}[tc.want]; o.BatchSize != want {
				t.Fatalf("sidecar batch size %d, want %d", o.BatchSize, want)
			}
		})
	}
}

func TestMutateDoesNotChangeTheSharedSidecarOptions(t *testing.T) {
	opts := DefaultSidecarOptions()
	before := opts.Resources.DeepCopy()
	if errs := Mutate(migratablePod(), opts); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !equality.Semantic.DeepEqual(*before, opts.Resources) {
		t.Fatalf("mutating a pod changed the manager's sidecar resources: %v", opts.Resources)
	}
}

func TestMutateIsIdempotent(t *testing.T) {
	once := migratablePod()
	if errs := Mutate(once, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	twice := once.DeepCopy()
	if errs := Mutate(twice, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !equality.Semantic.DeepEqual(once, twice) {
		t.Fatalf("re-admitting a mutated pod changed it:\nonce:  %+v\ntwice: %+v", once.Spec, twice.Spec)
	}
}

func TestMutateLeavesOtherPodsUntouched(t *testing.T) {
	for name, pod := range map[string]*corev1.Pod{
		"no annotation":      migratablePod(withoutAnnotation(v1.AnnotationMigratable)),
		"migratable false":   migratablePod(withAnnotation(v1.AnnotationMigratable, "false")),
		"no annotations map": {Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			before := pod.DeepCopy()
			if errs := Mutate(pod, DefaultSidecarOptions()); len(errs) > 0 {
				t.Fatalf("refused a pod that did not opt in: %v", errs)
			}
			if !equality.Semantic.DeepEqual(before, pod) {
				t.Fatalf("pod that did not opt in was changed")
			}
		})
	}
}

func TestMutateRefusesBadAnnotationsNamingThem(t *testing.T) {
	cases := []struct {
		name string
		pod  *corev1.Pod
		want []string // every annotation that must be named
	}{
		{"typo in migratable", migratablePod(withAnnotation(v1.AnnotationMigratable, "yes")), []string{v1.AnnotationMigratable}},
		{"nothing but migratable", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{v1.AnnotationMigratable: "true"}}},
			[]string{v1.AnnotationKafkaBrokers, v1.AnnotationKafkaTopic, v1.AnnotationKafkaGroup, v1.AnnotationAppPort}},
		{"broker without port", migratablePod(withAnnotation(v1.AnnotationKafkaBrokers, "kafka-0")), []string{v1.AnnotationKafkaBrokers}},
		{"broker port out of range", migratablePod(withAnnotation(v1.AnnotationKafkaBrokers, "kafka:9092,kafka:99999")), []string{v1.AnnotationKafkaBrokers}},
		{"broker bad host", migratablePod(withAnnotation(v1.AnnotationKafkaBrokers, "ka_fka:9092")), []string{v1.AnnotationKafkaBrokers}},
		{"topic with space", migratablePod(withAnnotation(v1.AnnotationKafkaTopic, "my orders")), []string{v1.AnnotationKafkaTopic}},
		{"group with slash", migratablePod(withAnnotation(v1.AnnotationKafkaGroup, "a/b")), []string{v1.AnnotationKafkaGroup}},
		{"port not a number", migratablePod(withAnnotation(v1.AnnotationAppPort, "http")), []string{v1.AnnotationAppPort}},
		{"port zero", migratablePod(withAnnotation(v1.AnnotationAppPort, "0")), []string{v1.AnnotationAppPort}},
		{"relative delivery path", migratablePod(withAnnotation(v1.AnnotationDeliveryPath, "messages")), []string{v1.AnnotationDeliveryPath}},
		{"batch size zero", migratablePod(withAnnotation(v1.AnnotationAppBatchSize, "0")), []string{v1.AnnotationAppBatchSize}},
		{"batch size above the maximum", migratablePod(withAnnotation(v1.AnnotationAppBatchSize, "1001")), []string{v1.AnnotationAppBatchSize}},
		{"batch size not a number", migratablePod(withAnnotation(v1.AnnotationAppBatchSize, "lots")), []string{v1.AnnotationAppBatchSize}},
		{"no delivery attempt", migratablePod(withAnnotation(v1.AnnotationMaxDeliveryAttempts, "0")), []string{v1.AnnotationMaxDeliveryAttempts}},
		{"delivery attempts not a number", migratablePod(withAnnotation(v1.AnnotationMaxDeliveryAttempts, "forever")), []string{v1.AnnotationMaxDeliveryAttempts}},
		{"dead-letter topic with space", migratablePod(withAnnotation(v1.AnnotationDeadLetterTopic, "bad orders")), []string{v1.AnnotationDeadLetterTopic}},
		{"relative quiesce path", migratablePod(withAnnotation(v1.AnnotationAppQuiescePath, "quiesce")), []string{v1.AnnotationAppQuiescePath}},
		{"quiesce path is the delivery path", migratablePod(withAnnotation(v1.AnnotationAppQuiescePath, "/messages")), []string{v1.AnnotationAppQuiescePath}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.pod.DeepCopy()
			errs := Mutate(tc.pod, DefaultSidecarOptions())
			if len(errs) == 0 {
				t.Fatal("accepted")
			}
			msg := errs.ToAggregate().Error()
			for _, a := range tc.want {
				if !strings.Contains(msg, "metadata.annotations["+a+"]") {
					t.Errorf("error does not name %s: %s", a, msg)
				}
			}
			if !equality.Semantic.DeepEqual(before, tc.pod) {
				t.Error("a refused pod was modified")
			}
		})
	}
}

// A migration's target pod is a copy of a mutated pod whose sidecar replays
// from the checkpoint offsets (or waits in standby for them): admitting it
// must keep that, or the target would consume live from the group's
// position and skip [O, F).
func TestMutateKeepsTheReplayOffsetsOfATargetPod(t *testing.T) {
	for _, env := range []corev1.EnvVar{
		{Name: replay.EnvReplayFrom, Value: `{"0":12}`},
		{Name: replay.EnvStandby, Value: "true"},
	} {
		t.Run(env.Name, func(t *testing.T) {
			target := migratablePod()
			if errs := Mutate(target, DefaultSidecarOptions()); len(errs) > 0 {
				t.Fatal(errs)
			}
			for i := range target.Spec.Containers {
				if target.Spec.Containers[i].Name == v1.SidecarContainerName {
					target.Spec.Containers[i].Env = append(target.Spec.Containers[i].Env, env)
				}
			}
			if errs := Mutate(target, DefaultSidecarOptions()); len(errs) > 0 {
				t.Fatal(errs)
			}
			found := 0
			for _, c := range target.Spec.Containers {
				for _, e := range c.Env {
					if e == env {
						found++
					}
				}
			}
			if found != 1 {
				t.Fatalf("%s present %d times after re-admission, want once", env.Name, found)
			}
		})
	}
}

// A migration's target is built with its source's group.instance.id as a
// value; admitting it must keep that value rather than put back the
// webhook's own (the pod's name), or the target joins the consumer group
// as a new member and every replica of the group is rebalanced.
func TestMutateKeepsTheSourcesGroupInstanceIDOfATargetPod(t *testing.T) {
	src := migratablePod()
	if errs := Mutate(src, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: src.Namespace, UID: "0f1e2d3c-aaaa"},
		Spec:   v1.StatefulMigrationSpec{SourcePod: src.Name},
		Status: v1.StatefulMigrationStatus{SourceNode: "node-1", TargetNode: "node-2", CheckpointImage: "registry/ckpt@sha256:0"}}
	target, err := migratable.BuildTarget(m, src, nil, "app")
	if err != nil {
		t.Fatal(err)
	}
	if errs := Mutate(target, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	sidecar := *migratable.Sidecar(target)
	var ids []corev1.EnvVar
	for _, e := range sidecar.Env {
		if e.Name == replay.EnvGroupInstanceID {
			ids = append(ids, e)
		}
	}
	if len(ids) != 1 || ids[0].ValueFrom != nil || ids[0].Value != src.Name {
		t.Fatalf("admitted target's %s: %+v; want the one value %q", replay.EnvGroupInstanceID, ids, src.Name)
	}
	if envOf(sidecar, replay.EnvReplayFrom) == "<unset>" {
		t.Errorf("admitted target lost %s", replay.EnvReplayFrom)
	}
}

// Through the real API server: an app's batch opt-in reaches its sidecar, and
// a bad one is refused with the annotation named, as kubectl shows it.
func TestAPIServerHandlesTheAppBatchSize(t *testing.T) {
	ok := migratablePod(withAnnotation(v1.AnnotationAppBatchSize, "64"))
	ok.Name = "batched"
	got := createAndGet(t, ok)
	if len(got.Spec.Containers) != 2 || envOf(got.Spec.Containers[1], replay.EnvAppBatchSize) != "64" {
		t.Fatalf("stored sidecar lacks %s=64: %v", replay.EnvAppBatchSize, got.Spec.Containers)
	}

	bad := migratablePod(withAnnotation(v1.AnnotationAppBatchSize, "5000"))
	bad.Name = "overbatched"
	err := env.Client.Create(context.Background(), bad)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), v1.AnnotationAppBatchSize) {
		t.Fatalf("creating a pod with %s=5000: %v; want Forbidden naming the annotation", v1.AnnotationAppBatchSize, err)
	}
}

// The handler writes its JSON patch directly (see podPatch): applied to the
// pod as the API server received it, the patch must give exactly the pod
// Mutate produces, and a pod that needs no change gets no patch.
func TestAdmissionPatchGivesTheMutatedPod(t *testing.T) {
	mutated := migratablePod()
	if errs := Mutate(mutated, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	outdated := mutated.DeepCopy() // a target pod carrying an older sidecar
	outdated.Spec.Containers[1].Image = "ghcr.io/ms2m/ms2m:v0.0.9"
	outdated.Spec.Containers[1].Env = append(outdated.Spec.Containers[1].Env, corev1.EnvVar{Name: replay.EnvReplayFrom, Value: `{"0":3}`})
	outdated.Annotations[v1.AnnotationSidecarImage] = "ghcr.io/ms2m/ms2m:v0.0.9"

	h := NewPodMutator(admission.NewDecoder(scheme.Scheme), DefaultSidecarOptions())
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		noPatch bool
	}{
		{"new migratable pod", migratablePod(withAnnotation("example.com/a~b/c", "kept")), false},
		{"pod with an outdated sidecar", outdated, false},
		{"already mutated pod", mutated, true},
		{"migratable false", migratablePod(withAnnotation(v1.AnnotationMigratable, "false")), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
			}})
			if !resp.Allowed {
				t.Fatalf("refused: %v", resp.Result)
			}
			if tc.noPatch {
				if len(resp.Patches) > 0 {
					t.Fatalf("a pod that needs no change got a patch: %v", resp.Patches)
				}
				return
			}
			ops, err := json.Marshal(resp.Patches)
			if err != nil {
				t.Fatal(err)
			}
			patch, err := jsonpatchapply.DecodePatch(ops)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := patch.Apply(raw)
			if err != nil {
				t.Fatalf("the API server could not apply the patch %s: %v", ops, err)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			want := tc.pod.DeepCopy()
			if errs := Mutate(want, DefaultSidecarOptions()); len(errs) > 0 {
				t.Fatal(errs)
			}
			if !equality.Semantic.DeepEqual(&got, want) {
				t.Fatalf("patched pod differs from the mutated pod:\npatch: %s\ngot:  %+v\nwant: %+v", ops, got, want)
			}
		})
	}
}

// The sidecar accepts control calls from the identity the manager passes
// (a chart installed under another name or namespace).
func TestSidecarAcceptsTheConfiguredManager(t *testing.T) {
	opts := DefaultSidecarOptions()
	opts.AllowedUsers = []string{"system:serviceaccount:other:elsewhere-ms2m-manager"}
	pod := migratablePod()
	if errs := Mutate(pod, opts); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := envOf(pod.Spec.Containers[1], replay.EnvAllowedUsers); got != "system:serviceaccount:other:elsewhere-ms2m-manager" {
		t.Fatalf("%s = %q", replay.EnvAllowedUsers, got)
	}
	def := migratablePod()
	if errs := Mutate(def, DefaultSidecarOptions()); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := envOf(def.Spec.Containers[1], replay.EnvAllowedUsers); got != "<unset>" {
		t.Fatalf("without --sidecar-allowed-users the sidecar's default applies, got %s=%q", replay.EnvAllowedUsers, got)
	}
}
