package charts_test

import (
	"os"
	"path/filepath"
	"strings"
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
			want, wantRole := &rbacv1.ClusterRole{}, &rbacv1.Role{}
			for _, doc := range strings.Split(string(raw), "\n---\n") {
				var into any = want
				if strings.Contains(doc, "\nkind: Role\n") {
					into = wantRole
				}
				if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
					t.Fatal(err)
				}
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

			// Rights in ms2m-system only: a Role in the release namespace,
			// naming the component's service account where the markers name
			// ms2m-<component>.
			roles := objs.ofKind("Role")
			if wantRole.Name == "" {
				return
			}
			for i, r := range wantRole.Rules {
				for j, n := range r.ResourceNames {
					if n == "ms2m-"+tc.component {
						wantRole.Rules[i].ResourceNames[j] = sa
					}
				}
			}
			var gotRole *rbacv1.Role
			for _, u := range roles {
				if u.GetName() == name {
					gotRole = as(t, u, &rbacv1.Role{})
				}
			}
			if gotRole == nil || gotRole.Namespace != namespace || !equality.Semantic.DeepEqual(gotRole.Rules, wantRole.Rules) {
				t.Fatalf("Role %s differs from config/rbac/%s/role.yaml (run `make generate`):\ngot  %+v\nwant %v", name, tc.component, gotRole, wantRole.Rules)
			}
			rb := as(t, objs.get(t, "RoleBinding", name), &rbacv1.RoleBinding{})
			if rb.Namespace != namespace || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != name || len(rb.Subjects) != 1 || rb.Subjects[0] != want1 {
				t.Errorf("RoleBinding %s/%s binds %s %s to %v; want Role %s to %v", rb.Namespace, name, rb.RoleRef.Kind, rb.RoleRef.Name, rb.Subjects, name, want1)
			}
		})
	}
}
