package charts_test

import (
	"os"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

// The chart grants exactly what the code's RBAC markers ask for.
func TestClusterRolesEqualGeneratedRBAC(t *testing.T) {
	objs := render(t)
	for _, tc := range []struct{ component, saOf string }{
		{"manager", "Deployment"},
		{"agent", "DaemonSet"},
	} {
		t.Run(tc.component, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(repoRoot(), "config", "rbac", tc.component, "role.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			want := &rbacv1.ClusterRole{}
			if err := yaml.UnmarshalStrict(raw, want); err != nil {
				t.Fatal(err)
			}
			name := release + "-" + tc.component
			got := as(t, objs.get(t, "ClusterRole", name), &rbacv1.ClusterRole{})
			if !equality.Semantic.DeepEqual(got.Rules, want.Rules) {
				t.Errorf("ClusterRole %s differs from config/rbac/%s/role.yaml (run `make generate`):\ngot  %v\nwant %v", name, tc.component, got.Rules, want.Rules)
			}
			binding := as(t, objs.get(t, "ClusterRoleBinding", name), &rbacv1.ClusterRoleBinding{})
			if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != name {
				t.Errorf("ClusterRoleBinding %s binds %s %s", name, binding.RoleRef.Kind, binding.RoleRef.Name)
			}
			sa := podSpecOf(t, objs, tc.saOf, name).ServiceAccountName
			want1 := rbacv1.Subject{Kind: "ServiceAccount", Name: sa, Namespace: namespace}
			if len(binding.Subjects) != 1 || binding.Subjects[0] != want1 {
				t.Errorf("ClusterRoleBinding %s binds %v; the %s runs as %s", name, binding.Subjects, tc.saOf, sa)
			}
			objs.get(t, "ServiceAccount", sa)
		})
	}
}
