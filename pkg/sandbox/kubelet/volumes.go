package kubelet

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
)

// Volumes are SIMULATED: the sandbox's containers are plain processes on
// the host, without mount namespaces. The simulated kubelet writes each
// volume's files under the pod directory (volumes/<name>) as the kubelet
// would into the volume — Secret, ConfigMap, downward API and projected
// volumes (the service account token, kube-root-ca.crt, the namespace);
// emptyDir is an empty directory there; hostPath is the host directory
// itself — and a container sees a volume at its mountPath because every
// absolute path in its command, args and env values that lies under a
// mountPath is redirected to the volume's directory. Paths a program reads
// without being told (client-go's in-cluster token, say) are not
// redirected; the kubelet's KUBECONFIG covers the service account. Paths
// inside the sandbox's own directory, which the pods share with the host,
// are never redirected.

// mountVolumes materializes pod's volumes and returns each one's host
// directory by volume name.
func (pr *podRuntime) mountVolumes(r envResolver, token string) (map[string]string, error) {
	dirs := map[string]string{}
	for _, v := range r.pod.Spec.Volumes {
		if v.HostPath != nil {
			t := ptr.Deref(v.HostPath.Type, corev1.HostPathUnset)
			if t == corev1.HostPathDirectoryOrCreate {
				if err := os.MkdirAll(v.HostPath.Path, 0o755); err != nil {
					return nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			}
			dirs[v.Name] = v.HostPath.Path
			continue
		}
		files, err := volumeFiles(r, v, token)
		if err != nil {
			return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
		}
		dir := filepath.Join(pr.dir, "volumes", v.Name)
		if err := mkdir(dir); err != nil {
			return nil, err
		}
		for rel, content := range files {
			path := filepath.Join(dir, filepath.Clean("/"+rel))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil { //nolint:gosec // as the kubelet's defaultMode 0644
				return nil, err
			}
		}
		dirs[v.Name] = dir
	}
	return dirs, nil
}

// volumeFiles is what a volume holds, path → content; an emptyDir and
// kinds the sandbox cannot provide (persistent volumes) are empty.
func volumeFiles(r envResolver, v corev1.Volume, token string) (map[string]string, error) {
	switch {
	case v.Secret != nil:
		return keyFiles(r.secret, v.Secret.SecretName, v.Secret.Items, ptr.Deref(v.Secret.Optional, false))
	case v.ConfigMap != nil:
		return keyFiles(r.configMap, v.ConfigMap.Name, v.ConfigMap.Items, ptr.Deref(v.ConfigMap.Optional, false))
	case v.DownwardAPI != nil:
		return downwardFiles(r, v.DownwardAPI.Items)
	case v.Projected != nil:
		out := map[string]string{}
		for _, src := range v.Projected.Sources {
			var files map[string]string
			var err error
			switch {
			case src.ServiceAccountToken != nil:
				files = map[string]string{src.ServiceAccountToken.Path: token}
			case src.Secret != nil:
				files, err = keyFiles(r.secret, src.Secret.Name, src.Secret.Items, ptr.Deref(src.Secret.Optional, false))
			case src.ConfigMap != nil:
				files, err = keyFiles(r.configMap, src.ConfigMap.Name, src.ConfigMap.Items, ptr.Deref(src.ConfigMap.Optional, false))
			case src.DownwardAPI != nil:
				files, err = downwardFiles(r, src.DownwardAPI.Items)
			}
			if err != nil {
				return nil, err
			}
			for k, v := range files {
				out[k] = v
			}
		}
		return out, nil
	}
	return nil, nil
}

// keyFiles are a Secret's or ConfigMap's keys as files, all of them or the
// items listed.
func keyFiles(get func(string) (map[string]string, error), name string, items []corev1.KeyToPath, optional bool) (map[string]string, error) {
	data, err := get(name)
	if apierrors.IsNotFound(err) && optional {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return data, nil
	}
	out := map[string]string{}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("%s has no key %q", name, it.Key)
		}
		out[it.Path] = v
	}
	return out, nil
}

func downwardFiles(r envResolver, items []corev1.DownwardAPIVolumeFile) (map[string]string, error) {
	out := map[string]string{}
	for _, it := range items {
		if it.FieldRef == nil {
			continue // resource fields: the sandbox sets no limits
		}
		v, err := fieldValue(r.pod, r.podIP, r.hostIP, it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		out[it.Path] = v
	}
	return out, nil
}

// mountPoint is where a container sees a volume (path) and where it is on
// the host (dir).
type mountPoint struct{ path, dir string }

// mountTable is a container's mounts, deepest mountPath first.
type mountTable struct {
	mounts []mountPoint
	shared string // never redirected: the sandbox's own directory
}

func newMountTable(mounts []corev1.VolumeMount, dirs map[string]string, shared string) mountTable {
	t := mountTable{shared: shared}
	for _, m := range mounts {
		dir, ok := dirs[m.Name]
		if !ok || !filepath.IsAbs(m.MountPath) || filepath.Clean(m.MountPath) == "/" {
			continue
		}
		t.mounts = append(t.mounts, mountPoint{path: filepath.Clean(m.MountPath), dir: filepath.Join(dir, m.SubPath)})
	}
	slices.SortFunc(t.mounts, func(a, b mountPoint) int { return cmp.Compare(len(b.path), len(a.path)) })
	return t
}

// isPathChar says whether c can be part of a path in a command line.
func isPathChar(c byte) bool {
	return c > ' ' && !strings.ContainsRune(`=,:;"'`, rune(c))
}

// rewrite redirects every absolute path in s that lies under a mountPath.
func (t mountTable) rewrite(s string) string {
	if len(t.mounts) == 0 || !strings.Contains(s, "/") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '/' || (i > 0 && isPathChar(s[i-1])) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isPathChar(s[j]) {
			j++
		}
		b.WriteString(t.resolve(s[i:j]))
		i = j
	}
	return b.String()
}

// resolve is where a container's absolute path is on the host.
func (t mountTable) resolve(path string) string {
	if t.shared != "" && (path == t.shared || strings.HasPrefix(path, t.shared+"/")) {
		return path
	}
	for _, m := range t.mounts {
		if path == m.path {
			return m.dir
		}
		if rest, ok := strings.CutPrefix(path, m.path+"/"); ok {
			return filepath.Join(m.dir, rest)
		}
	}
	return path
}

// rewriteEnv redirects the paths in NAME=value entries' values.
func (t mountTable) rewriteEnv(env []string) []string {
	out := make([]string, len(env))
	for i, e := range env {
		name, value, _ := strings.Cut(e, "=")
		out[i] = name + "=" + t.rewrite(value)
	}
	return out
}
