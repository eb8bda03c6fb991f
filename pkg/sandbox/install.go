package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// SystemNamespace is where ms2m's own components run.
const SystemNamespace = "ms2m-system"

// Image is the project image the sandbox runs ms2m's components from.
const Image = "ghcr.io/ms2m/ms2m:v0.1.0"

// install creates ms2m's namespace, service accounts and their generated
// ClusterRoles and Roles (config/rbac), and the agent DaemonSet; it returns a client
// configuration carrying the manager service account's token, so the
// in-process manager runs with exactly the permissions the chart grants.
func (s *Sandbox) install(ctx context.Context) (*rest.Config, error) {
	c := s.Client
	if err := create(ctx, func() error {
		_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SystemNamespace}}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	for _, name := range []string{"manager", "agent"} {
		sa := "ms2m-" + name
		if err := create(ctx, func() error {
			_, err := c.CoreV1().ServiceAccounts(SystemNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
			return err
		}); err != nil {
			return nil, err
		}
		if err := applyRoles(ctx, c, filepath.Join(s.opts.RBACDir, name, "role.yaml"), sa); err != nil {
			return nil, err
		}
	}
	if err := s.applyAgent(ctx); err != nil {
		return nil, err
	}
	tr, err := c.CoreV1().ServiceAccounts(SystemNamespace).CreateToken(ctx, "ms2m-manager", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(7 * 24 * 3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for the manager: %w", err)
	}
	return &rest.Config{Host: s.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: s.Config.CAData},
		BearerToken: tr.Status.Token, QPS: managerQPS, Burst: managerBurst}, nil
}

// The manager's client rate limits, in process or as a child.
const managerQPS, managerBurst = 100, 200

func create(_ context.Context, fn func() error) error {
	if err := fn(); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// applyRoles creates (or updates) the generated ClusterRole in file and,
// when the file has one, its Role in ms2m-system, and binds them to the
// service account.
func applyRoles(ctx context.Context, c kubernetes.Interface, file, sa string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("sandbox: RBAC for %s: %w (run `make generate`)", sa, err)
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: SystemNamespace}}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return fmt.Errorf("sandbox: %s: %w", file, err)
		}
		switch meta.Kind {
		case "ClusterRole":
			role := &rbacv1.ClusterRole{}
			if err := yaml.Unmarshal([]byte(doc), role); err != nil {
				return fmt.Errorf("sandbox: %s: %w", file, err)
			}
			roles := c.RbacV1().ClusterRoles()
			if err := upsert(ctx, role.Name, role, roles.Create, roles.Get, roles.Update, func(cur *rbacv1.ClusterRole) { cur.Rules = role.Rules }); err != nil {
				return err
			}
			if err := create(ctx, func() error {
				_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: role.Name},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
					Subjects:   subjects,
				}, metav1.CreateOptions{})
				return err
			}); err != nil {
				return err
			}
		case "Role":
			role := &rbacv1.Role{}
			if err := yaml.Unmarshal([]byte(doc), role); err != nil {
				return fmt.Errorf("sandbox: %s: %w", file, err)
			}
			if role.Namespace != SystemNamespace {
				return fmt.Errorf("sandbox: %s: a Role in %q; the markers may ask for rights in %s only", file, role.Namespace, SystemNamespace)
			}
			roles := c.RbacV1().Roles(SystemNamespace)
			if err := upsert(ctx, role.Name, role, roles.Create, roles.Get, roles.Update, func(cur *rbacv1.Role) { cur.Rules = role.Rules }); err != nil {
				return err
			}
			if err := create(ctx, func() error {
				_, err := c.RbacV1().RoleBindings(SystemNamespace).Create(ctx, &rbacv1.RoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: role.Name},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
					Subjects:   subjects,
				}, metav1.CreateOptions{})
				return err
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

// upsert creates obj, or sets what it carries on the existing one.
func upsert[T any](ctx context.Context, name string, obj *T,
	createFn func(context.Context, *T, metav1.CreateOptions) (*T, error),
	get func(context.Context, string, metav1.GetOptions) (*T, error),
	update func(context.Context, *T, metav1.UpdateOptions) (*T, error),
	set func(cur *T)) error {
	_, err := createFn(ctx, obj, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	set(cur)
	_, err = update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// applyAgent runs the node agent on every node, as the chart's DaemonSet.
func (s *Sandbox) applyAgent(ctx context.Context) error {
	labels := map[string]string{"app.kubernetes.io/name": "ms2m-agent"}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ms2m-agent", Namespace: SystemNamespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "ms2m-agent",
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name: "agent", Image: Image, Command: []string{"/ms2m/ms2m-agent"},
						Args: []string{
							// Paths on the node (hostPath in a real cluster).
							"--kubelet-ca-file=" + filepath.Join(s.opts.Dir, "pki", "kubelet-ca.crt"),
							"--checkpoint-image-repository=" + s.Registry + "/checkpoints",
							// The sandbox's registry is on loopback, without TLS.
							"--plain-http-registries=" + s.Registry,
							"--checkpoint-dir=" + filepath.Join(s.opts.Dir, "nodes", "$(NODE_NAME)", "checkpoints"),
							// The node's directory stands for its root filesystem
							// (its CRIU configuration is etc/criu/*.conf there).
							"--host-root=" + filepath.Join(s.opts.Dir, "nodes", "$(NODE_NAME)"),
							"--health-probe-bind-address=$(POD_IP):8082",
							"--probe-interval=1m",
						},
						Env: []corev1.EnvVar{fieldEnv("NODE_NAME", "spec.nodeName"), fieldEnv("POD_IP", "status.podIP"),
							fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_UID", "metadata.uid")},
						Ports: []corev1.ContainerPort{{Name: "health", ContainerPort: 8082}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("health")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	dss := s.Client.AppsV1().DaemonSets(SystemNamespace)
	return upsert(ctx, ds.Name, ds, dss.Create, dss.Get, dss.Update, func(cur *appsv1.DaemonSet) { cur.Spec.Template = ds.Spec.Template })
}

// waitAgents waits until the agent runs on every node.
func (s *Sandbox) waitAgents(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		ds, err := s.Client.AppsV1().DaemonSets(SystemNamespace).Get(ctx, "ms2m-agent", metav1.GetOptions{})
		if err == nil && ds.Status.DesiredNumberScheduled > 0 && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox: the ms2m agent is not ready on every node (logs under %s)", filepath.Join(s.opts.Dir, "nodes", "*", "pods", SystemNamespace+"_ms2m-agent-*"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
