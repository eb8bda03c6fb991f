package kubelet

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// expand replaces $(VAR) with vars[VAR] as the kubelet does for env values,
// command and args: $$ escapes a $, an unknown $(VAR) stays as written.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// fieldValue resolves a downward-API field path as the kubelet does.
func fieldValue(pod *corev1.Pod, podIP, hostIP, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if rest, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(rest, "']") {
			return m[strings.TrimSuffix(rest, "']")], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// envResolver fetches the ConfigMaps and Secrets a container's env names.
type envResolver struct {
	ctx    context.Context
	client kubernetes.Interface
	pod    *corev1.Pod
	podIP  string
	hostIP string
}

func (r envResolver) configMap(name string) (map[string]string, error) {
	cm, err := r.client.CoreV1().ConfigMaps(r.pod.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	return cm.Data, nil
}

func (r envResolver) secret(name string) (map[string]string, error) {
	s, err := r.client.CoreV1().Secrets(r.pod.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// resolve returns the container's environment in order, envFrom first, as
// NAME=value strings, plus the map used to expand command and args.
func (r envResolver) resolve(c *corev1.Container) ([]string, map[string]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		var err error
		optional := false
		switch {
		case from.ConfigMapRef != nil:
			optional = from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
			data, err = r.configMap(from.ConfigMapRef.Name)
		case from.SecretRef != nil:
			optional = from.SecretRef.Optional != nil && *from.SecretRef.Optional
			data, err = r.secret(from.SecretRef.Name)
		}
		if err != nil && !optional {
			return nil, nil, err
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		v, err := r.value(e, vars)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, v)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, vars, nil
}

func (r envResolver) value(e corev1.EnvVar, vars map[string]string) (string, error) {
	src := e.ValueFrom
	if src == nil {
		return expand(e.Value, vars), nil
	}
	pick := func(data map[string]string, err error, key string, optional *bool) (string, error) {
		if err != nil {
			if optional != nil && *optional {
				return "", nil
			}
			return "", err
		}
		v, ok := data[key]
		if !ok && (optional == nil || !*optional) {
			return "", fmt.Errorf("key %q not found", key)
		}
		return v, nil
	}
	switch {
	case src.FieldRef != nil:
		return fieldValue(r.pod, r.podIP, r.hostIP, src.FieldRef.FieldPath)
	case src.ConfigMapKeyRef != nil:
		data, err := r.configMap(src.ConfigMapKeyRef.Name)
		return pick(data, err, src.ConfigMapKeyRef.Key, src.ConfigMapKeyRef.Optional)
	case src.SecretKeyRef != nil:
		data, err := r.secret(src.SecretKeyRef.Name)
		return pick(data, err, src.SecretKeyRef.Key, src.SecretKeyRef.Optional)
	case src.ResourceFieldRef != nil:
		return resourceValue(r.pod, src.ResourceFieldRef)
	}
	return "", nil
}

// resourceValue resolves a resourceFieldRef as the kubelet does for a
// container with the resource set: the quantity divided by the divisor
// (default 1), rounded up. The sandbox enforces no limit; a resource the
// container does not set resolves empty (the kubelet would give the node's
// allocatable).
func resourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName == "" {
		return "", nil // the container's own: not known here
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef %q: unsupported resource", ref.Resource)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != ref.ContainerName {
			continue
		}
		list := c.Resources.Limits
		if kind == "requests" {
			list = c.Resources.Requests
		}
		q, ok := list[corev1.ResourceName(name)]
		if !ok {
			return "", nil
		}
		divisor := ref.Divisor
		if divisor.IsZero() {
			divisor = resource.MustParse("1")
		}
		if name == string(corev1.ResourceCPU) {
			return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
		}
		return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
	}
	return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
}
