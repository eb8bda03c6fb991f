package kubelet

import (
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// Each container has a SIMULATED cgroup v2 (simcriu.Cgroup) under the
// node's root (sys/fs/cgroup/...) where the flavour's runtime puts the
// container's cgroup. The layouts are the runtimes' own:
//   - CRI-O with the systemd cgroup driver and crun, its default runtime:
//     kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/
//     crio-<id>.scope/container (crun puts the processes in a "container"
//     leaf, which is what it and CRIU freeze);
//   - containerd with the cgroupfs driver: kubepods/<qos>/pod<uid>/<id>.
//
// Guaranteed pods have no <qos> level.

// containerCgroup is where c's cgroup lies on n.
func (n *node) containerCgroup(uid types.UID, qos corev1.PodQOSClass, id string) simcriu.Cgroup {
	q := strings.ToLower(string(qos))
	if q == "" {
		q = strings.ToLower(string(corev1.PodQOSBurstable))
	}
	var dir string
	if n.spec.flavour() == FlavourContainerd {
		dir = "kubepods"
		if qos != corev1.PodQOSGuaranteed {
			dir = filepath.Join(dir, q)
		}
		dir = filepath.Join(dir, "pod"+string(uid), id)
	} else {
		pod := "pod" + strings.ReplaceAll(string(uid), "-", "_")
		dir = filepath.Join("kubepods.slice", "kubepods-"+pod+".slice")
		if qos != corev1.PodQOSGuaranteed {
			dir = filepath.Join("kubepods.slice", "kubepods-"+q+".slice", "kubepods-"+q+"-"+pod+".slice")
		}
		dir = filepath.Join(dir, "crio-"+id+".scope", "container")
	}
	return simcriu.Cgroup(filepath.Join(n.root(), "sys", "fs", "cgroup", dir))
}
