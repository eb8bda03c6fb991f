package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	"github.com/ms2m/ms2m/internal/expect"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
)

// RunAsNonRootSpec: a pod with runAsNonRoot and no runAsUser migrates. The
// kubelet verifies such a container against its image's user, and a
// checkpoint image whose config names none would run as root: the target
// would sit in CreateContainerConfigError. The image carries the
// checkpointed process's user. The target also pulls its base image
// first, in an init container run from that image as non-root.
func RunAsNonRootSpec(in SpecInput) features.Feature {
	return feature("runAsNonRoot without runAsUser", "the target starts from the checkpoint image; zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "nonroot", func(e *deploy.Example) { e.RunAsNonRoot = true })
		src := s.deploy(ctx, in.Load.Count/4).Pod
		got := s.completed(s.migrate(ctx, "move", src.Name, v1.StatefulMigrationSpec{}))
		t.Logf("migrated to %s on %s", got.Status.TargetPod, got.Status.TargetNode)
		after := s.verifyZeroLoss(ctx)
		// The target pulled its base image before its app was restored:
		// the init container that runs from it, as non-root, exited 0.
		pulled := false
		for _, st := range after.Pod.Status.InitContainerStatuses {
			if st.Name == migratable.InitPullBase && st.State.Terminated != nil && st.State.Terminated.ExitCode == 0 {
				pulled = st.Image == src.Spec.Containers[0].Image
			}
		}
		if !pulled {
			t.Errorf("the target %s did not run %s from the base image %s: %+v", after.Pod.Name, migratable.InitPullBase, src.Spec.Containers[0].Image, after.Pod.Status.InitContainerStatuses)
		}
	})
}

// BaseImagePullSpec: the app's image is one no node holds until a pod uses
// it. A pod on a CRI-O node and one on a containerd node each migrate to
// the other node of their runtime, which does not hold it: CRI-O restores
// only from a base image in the node's store and does not pull it;
// containerd pulls it, but with the node's credentials only, not the pod's
// imagePullSecrets, so the containerd pod's image is a private one (the
// sandbox registry's, which a pod without its pull secret cannot even
// start from). Both complete with zero loss, the target having pulled the
// base image in its init container first, with the pod's pull secret. On
// both runtimes the source's checkpoint pause ended when the runtime let
// the container run again (its cgroup's last thaw), not when the kubelet
// answered: on containerd, which writes the archive after that, earlier.
func BaseImagePullSpec(in SpecInput) features.Feature {
	return feature("target without the base image", "a CRI-O target (public image) and a containerd target (private image, pull secret) pull it first; both complete, zero loss; the pause ends at the runtime's thaw", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "reads the simulated nodes' image stores")
		sb := in.Cluster.Sandbox
		for _, runtime := range []string{kubelet.FlavourCRIO, kubelet.FlavourContainerd} {
			image, secrets := kubelet.SecondProjectImage+":v0.1.0", []string(nil)
			if runtime == kubelet.FlavourContainerd {
				image, secrets = sb.PrivateAppImage(), []string{"sandbox-registry"}
			}
			nodes := in.Cluster.schedulableNodes(t, v1.LabelCheckpointRestore+"=true,"+v1.LabelRuntime+"="+runtime)
			if len(nodes) < 2 {
				t.Fatalf("needs two nodes that restore as %s, have %v", runtime, nodes)
			}
			src, dst := nodes[0], nodes[1]
			if sb.Fleet.Holds(dst, image) {
				t.Fatalf("%s holds %s already: nothing to check", dst, image)
			}
			// A group of its own: the first pod still consumes when the second starts.
			s := in.open(t, "baseimg", func(e *deploy.Example) {
				e.AppImage, e.ImagePullSecrets, e.Bare, e.Node, e.Group = image, secrets, true, src, "orders-"+runtime
			})
			if secrets != nil {
				s.privateImageNeedsItsSecret(ctx, image, src)
			}
			pod := s.deploy(ctx, in.Load.Count/4).Pod
			got := s.completed(s.migrate(ctx, "move", pod.Name, v1.StatefulMigrationSpec{TargetNode: dst}))
			s.verifyZeroLoss(ctx)
			if !sb.Fleet.Holds(dst, image) {
				t.Errorf("%s: the target node %s does not hold the base image after the restore", runtime, dst)
			}
			ck, err := v1.AgentResultOf(got, v1.AnnotationAgentCheckpoint)
			switch {
			case err != nil || ck == nil || ck.Steps == nil:
				t.Errorf("%s: no checkpoint steps reported (%v)", runtime, err)
			case !ck.Steps.ResumedAtThaw:
				t.Errorf("%s: the source's sidecar was resumed only when the kubelet answered: %s", runtime, ck.Steps)
			case runtime == kubelet.FlavourContainerd && ck.Steps.KubeletAfterThaw.Duration <= 0:
				t.Errorf("%s: the kubelet answered no later than the thaw, though containerd writes the archive after it: %s", runtime, ck.Steps)
			default:
				t.Logf("%s: checkpoint %s", runtime, ck.Steps)
			}
			t.Logf("%s: %s/%s moved from %s to %s, which did not hold %s; restored after its %s init container, zero loss",
				runtime, s.NS, pod.Name, src, got.Status.TargetNode, image, migratable.InitPullBase)
		}
	})
}

// privateImageNeedsItsSecret checks that the sandbox refuses a private
// image as a registry does: a pod without the pull secret waits in
// ErrImagePull, unauthorized. Then it creates the secret the spec's pods
// name.
func (s *Spec) privateImageNeedsItsSecret(ctx context.Context, image, node string) {
	s.t.Helper()
	pods := s.Client.CoreV1().Pods(s.NS)
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "no-pull-secret"}, Spec: corev1.PodSpec{NodeName: node,
		Containers: []corev1.Container{{Name: "app", Image: image, Command: []string{"/ms2m/example-consumer"}}}}}
	if _, err := pods.Create(ctx, bare, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	expect.Eventually(s.t, "a pod without the pull secret refused its private image", func() error {
		p, err := pods.Get(ctx, bare.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, st := range p.Status.ContainerStatuses {
			if w := st.State.Waiting; w != nil && w.Reason == "ErrImagePull" && strings.Contains(w.Message, "UNAUTHORIZED") {
				return nil
			}
		}
		return fmt.Errorf("status %+v", p.Status.ContainerStatuses)
	})
	if err := pods.Delete(ctx, bare.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		s.t.Fatal(err)
	}
	secret, err := s.Cluster.Sandbox.PullSecret(s.NS, s.Example.ImagePullSecrets[0])
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.Client.CoreV1().Secrets(s.NS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}
