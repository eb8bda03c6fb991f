package kubelet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// The simulated runtime behaves as CRI-O: the names below are CRI-O's
// (pkg/annotations in cri-o/cri-o), written into spec.dump at a checkpoint
// and read back at a restore, and checkpointctl's engine detection
// (io.container.manager) classifies the archive as CRI-O's.
const (
	crioCheckpointAnnotation = "io.kubernetes.cri-o.annotations.checkpoint.name"
	// containerdCheckpointAnnotation on an index makes containerd 2.1-2.3
	// restore the container from it (restore in CreateContainer).
	containerdCheckpointAnnotation = "org.criu.checkpoint.container.name"
	crioContainerManager           = "io.container.manager"
	crioAnnotations                = "io.kubernetes.cri-o.Annotations"
	crioLabels                     = "io.kubernetes.cri-o.Labels"
	crioMetadata                   = "io.kubernetes.cri-o.Metadata"
	crioContainerName              = "io.kubernetes.cri-o.ContainerName"
	crioCreated                    = "io.kubernetes.cri-o.Created"
	crioIP                         = "io.kubernetes.cri-o.IP.0"
	crioImageName                  = "io.kubernetes.cri-o.ImageName"
	crioImageRef                   = "io.kubernetes.cri-o.ImageRef"
)

// crioSpecAnnotations are the annotations CRI-O puts on a container's OCI
// spec, as spec.dump holds them.
func crioSpecAnnotations(pod, ns, uid, ctr, image, imageID, podIP string, attempt int32, created time.Time) map[string]string {
	labels := map[string]string{
		"io.kubernetes.container.name": ctr, "io.kubernetes.pod.name": pod,
		"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.uid": uid,
	}
	annotations := map[string]string{"io.kubernetes.container.restartCount": fmt.Sprint(attempt)}
	asJSON := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	return map[string]string{
		crioContainerManager:     "cri-o",
		crioAnnotations:          asJSON(annotations),
		crioLabels:               asJSON(labels),
		crioMetadata:             asJSON(map[string]any{"name": ctr, "attempt": attempt}),
		crioContainerName:        fmt.Sprintf("k8s_%s_%s_%s_%s_%d", ctr, pod, ns, uid, attempt),
		crioCreated:              created.UTC().Format(time.RFC3339Nano),
		crioIP:                   podIP,
		crioImageName:            image,
		crioImageRef:             imageID,
		"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": ns,
		"io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": ctr,
	}
}

// containerdSpecAnnotations are the annotations containerd's CRI plugin
// puts on a container's OCI spec (pkg/cri/annotations in
// containerd/containerd), as its spec.dump holds them.
func containerdSpecAnnotations(pod, ns, uid, ctr, image string) map[string]string {
	return map[string]string{
		"io.kubernetes.cri.container-type":    "container",
		"io.kubernetes.cri.container-name":    ctr,
		"io.kubernetes.cri.image-name":        image,
		"io.kubernetes.cri.sandbox-name":      pod,
		"io.kubernetes.cri.sandbox-namespace": ns,
		"io.kubernetes.cri.sandbox-uid":       uid,
	}
}

// simulatedImageID stands for the ID a runtime gives an image it pulled
// (the config's digest): the sandbox does not pull project images, so it
// derives one from the name. Stable, so the same image has the same ID on
// every node.
func simulatedImageID(image string) string {
	sum := sha256.Sum256([]byte(image))
	return hex.EncodeToString(sum[:])
}
