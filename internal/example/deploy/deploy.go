// Package deploy builds the Kubernetes objects of the example workload (the
// stateful consumer opted in to ms2m, whose replay sidecar the webhook
// injects, and a producer Job) and runs the deploy → produce → migrate →
// verify flow on them. It exists so that `ms2m-sandbox demo`, the e2e specs
// and the benchmarks deploy the very same objects: what a newcomer sees in
// the demo is what the tests check and the benchmarks measure. It is
// internal because it serves this module's tools, not users' programs; the
// example's own code is under examples/.
package deploy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	migrationv1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// Image is the project image; the command names the binary.
const Image = "ghcr.io/ms2m/ms2m:v0.1.0"

// Example describes one deployment of the example workload.
type Example struct {
	Name    string
	Brokers []string
	Topic   string
	// EffectsTopic receives one record per live-processed message.
	EffectsTopic string
	// ProcessTime per message in the consumer; ReplayProcessTime per
	// replayed message, when set.
	ProcessTime, ReplayProcessTime time.Duration
	// Rate and Count of the producer.
	Rate  float64
	Count int64
	// Group is the consumer group (default Name). A group shared by
	// consumers that come and go, one after the other, keeps a deleted
	// static member's place for the session timeout, and the next join
	// waits for it up to the rebalance timeout: runs that must start at
	// once use a group of their own.
	Group string
	// Replicas of the consumer Deployment (or StatefulSet), all in one
	// consumer group, each given its share of the topic's partitions; 0
	// means 1.
	Replicas int
	// Partitions of the topic, created with that many before the consumer
	// is deployed; 0 leaves it to the producer to create (the broker's
	// default count). Several replicas need at least as many as there are
	// replicas.
	Partitions int
	// Bare runs the consumer as a pod without an owner.
	Bare bool
	// StatefulSet runs the consumer as a StatefulSet (pods Name-0, ...),
	// migrated with the identity-preserving Sequential strategy.
	StatefulSet bool
	// Node places a bare consumer on this node (spec.nodeName, so nothing
	// in its spec ties it there once it is migrated); empty: the
	// scheduler's choice.
	Node string
	// ProducerNode runs the producer on this node; empty: the scheduler's
	// choice.
	ProducerNode string
	// Annotations are added to the consumer's pod (template).
	Annotations map[string]string
	// AppEnv is added to the consumer's app container's environment.
	AppEnv map[string]string
	// AppImage is the consumer's app image (default Image), pulled with
	// ImagePullSecrets (secrets in the namespace).
	AppImage         string
	ImagePullSecrets []string
	// RunAsNonRoot sets the consumer pod's runAsNonRoot, without a
	// runAsUser: the kubelet then verifies the image's user.
	RunAsNonRoot bool
}

func (e Example) effects() string {
	if e.EffectsTopic != "" {
		return e.EffectsTopic
	}
	return e.Topic + "-effects"
}

// GroupName is the consumer group: Group, else Name.
func (e Example) GroupName() string {
	if e.Group != "" {
		return e.Group
	}
	return e.Name
}

// ReplicaCount is the number of consumer pods: Replicas, at least 1.
func (e Example) ReplicaCount() int { return max(e.Replicas, 1) }

// Labels select the consumer's pods.
func (e Example) Labels() map[string]string { return map[string]string{"app": e.Name} }

// Consumer is a Deployment of ReplicaCount replicas of the stateful
// consumer, annotated for ms2m: the webhook injects the replay sidecar that
// consumes Topic as group Name (a static member named after its pod) and
// delivers to port 8080.
func (e Example) Consumer() *appsv1.Deployment {
	env := func(k, v string) corev1.EnvVar { return corev1.EnvVar{Name: k, Value: v} }
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Labels: e.Labels()},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(e.ReplicaCount())),
			Selector: &metav1.LabelSelector{MatchLabels: e.Labels()},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: e.Labels(), Annotations: map[string]string{
					migrationv1alpha1.AnnotationMigratable:   "true",
					migrationv1alpha1.AnnotationKafkaBrokers: strings.Join(e.Brokers, ","),
					migrationv1alpha1.AnnotationKafkaTopic:   e.Topic,
					migrationv1alpha1.AnnotationKafkaGroup:   e.GroupName(),
					migrationv1alpha1.AnnotationAppPort:      "8080",
					// The example closes its effect writer's broker
					// connections there before a checkpoint.
					migrationv1alpha1.AnnotationAppQuiescePath: replay.QuiescePath,
				}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            e.Name,
					TerminationGracePeriodSeconds: ptr.To(int64(10)),
					Containers: []corev1.Container{{
						Name: "app", Image: Image, Command: []string{"/ms2m/example-consumer"},
						Env: []corev1.EnvVar{
							{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
							env("PROCESS_TIME", e.ProcessTime.String()),
							env("REPLAY_PROCESS_TIME", e.ReplayProcessTime.String()),
							env("EFFECTS_BROKERS", strings.Join(e.Brokers, ",")),
							env("EFFECTS_TOPIC", e.effects()),
						},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	for k, v := range e.Annotations {
		d.Spec.Template.Annotations[k] = v
	}
	if e.RunAsNonRoot {
		d.Spec.Template.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
	}
	app := &d.Spec.Template.Spec.Containers[0]
	if e.AppImage != "" {
		app.Image = e.AppImage
	}
	for _, name := range e.ImagePullSecrets {
		d.Spec.Template.Spec.ImagePullSecrets = append(d.Spec.Template.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	for _, k := range slices.Sorted(maps.Keys(e.AppEnv)) {
		app.Env = append(app.Env, env(k, e.AppEnv[k]))
	}
	return d
}

// ConsumerStatefulSet is the consumer as a StatefulSet.
func (e Example) ConsumerStatefulSet() *appsv1.StatefulSet {
	d := e.Consumer()
	return &appsv1.StatefulSet{ObjectMeta: d.ObjectMeta, Spec: appsv1.StatefulSetSpec{
		Replicas: d.Spec.Replicas, Selector: d.Spec.Selector, Template: d.Spec.Template, ServiceName: e.Name,
	}}
}

// BarePod is the consumer as a pod without an owner.
func (e Example) BarePod() *corev1.Pod {
	t := e.Consumer().Spec.Template
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: e.Name, Labels: t.Labels, Annotations: t.Annotations}, Spec: t.Spec}
	p.Spec.NodeName = e.Node
	return p
}

// ServiceAccount is the consumer's identity. It needs no role: the replay
// sidecar checks the manager's tokens offline (replay.TokenVerifier).
func (e Example) ServiceAccount() *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: e.Name}}
}

// Producer is a Job writing Count numbered messages at Rate.
func (e Example) Producer() *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name + "-producer"},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(int32(3)),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyOnFailure,
				NodeName:      e.ProducerNode,
				Containers: []corev1.Container{{
					Name: "producer", Image: Image,
					Command: []string{"/ms2m/example-producer",
						"--brokers=" + strings.Join(e.Brokers, ","), "--topic=" + e.Topic,
						fmt.Sprintf("--rate=%g", e.Rate), fmt.Sprintf("--count=%d", e.Count)},
				}},
			}},
		},
	}
}

// Effects is the effects topic's name.
func (e Example) Effects() string { return e.effects() }
