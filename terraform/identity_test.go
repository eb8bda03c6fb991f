package terraform_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
)

// testProject stands for var.project_id, which has no default.
const testProject = "test-project"

// pushPermissions is all a Docker push to Artifact Registry needs: upload,
// the reads the push makes (its token asks for "push,pull"; it checks with
// a HEAD which blobs are there), and setting the image's tag.
var pushPermissions = []string{
	"artifactregistry.repositories.downloadArtifacts",
	"artifactregistry.repositories.uploadArtifacts",
	"artifactregistry.tags.create",
	"artifactregistry.tags.update",
}

// deletePermissions is all the manager's delete of a checkpoint image
// needs: an HTTP DELETE through the Docker registry API of the image's tag,
// then of its manifest (go-containerregistry's remote.Delete). Chosen from
// Artifact Registry's permission reference, not tried against a cloud. No
// read: the manager never reads a process's memory.
var deletePermissions = []string{
	"artifactregistry.repositories.deleteArtifacts",
	"artifactregistry.tags.delete",
	"artifactregistry.versions.delete",
}

// evalContext is what the module's expressions evaluate to without a
// cloud: the variables' defaults (project_id: testProject), the locals,
// and each resource's attributes that are literal or computed from those,
// plus the attributes Google computes that IAM bindings name, in the form
// Google gives them (a service account's email and name, a custom role's
// name, a repository's name). What cannot be evaluated is left out, and
// an expression using it fails to evaluate.
func (c config) evalContext(t *testing.T) *hcl.EvalContext {
	t.Helper()
	return c.evalContextWith(t, nil)
}

// evalContextWith is evalContext with some variables set, as in a tfvars
// file.
func (c config) evalContextWith(t *testing.T, set map[string]cty.Value) *hcl.EvalContext {
	t.Helper()
	vars := map[string]cty.Value{"project_id": cty.StringVal(testProject)}
	for _, blocks := range c.blocks("variable") {
		for _, b := range blocks {
			if d, ok := b.Body.Attributes["default"]; ok {
				if v, diags := d.Expr.Value(nil); !diags.HasErrors() {
					vars[b.Labels[0]] = v
				}
			}
		}
	}
	for name, v := range set {
		vars[name] = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":  cty.ObjectVal(vars),
			"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(dir())}),
		},
		Functions: map[string]function.Function{"replace": stdlib.ReplaceFunc, "jsonencode": stdlib.JSONEncodeFunc},
	}
	// Resources and locals refer to each other: evaluate until nothing
	// more can be.
	for range 5 {
		locals := map[string]cty.Value{}
		for _, blocks := range c.blocks("locals") {
			for _, b := range blocks {
				for name, a := range b.Body.Attributes {
					if v, diags := a.Expr.Value(ctx); !diags.HasErrors() && v.IsWhollyKnown() {
						locals[name] = v
					}
				}
			}
		}
		ctx.Variables["local"] = cty.ObjectVal(locals)
		resources := map[string]map[string]cty.Value{}
		for _, blocks := range c.blocks("resource") {
			for _, b := range blocks {
				typ, name := b.Labels[0], b.Labels[1]
				if resources[typ] == nil {
					resources[typ] = map[string]cty.Value{}
				}
				resources[typ][name] = cty.ObjectVal(computed(typ, bodyValue(b.Body, ctx)))
			}
		}
		for typ, byName := range resources {
			ctx.Variables[typ] = cty.ObjectVal(byName)
		}
	}
	return ctx
}

// bodyValue is a block's attributes that evaluate, and its nested blocks
// as lists.
func bodyValue(body *hclsyntax.Body, ctx *hcl.EvalContext) map[string]cty.Value {
	out := map[string]cty.Value{}
	for name, a := range body.Attributes {
		if v, diags := a.Expr.Value(ctx); !diags.HasErrors() && v.IsWhollyKnown() {
			out[name] = v
		}
	}
	nested := map[string][]cty.Value{}
	for _, b := range body.Blocks {
		nested[b.Type] = append(nested[b.Type], cty.ObjectVal(bodyValue(b.Body, ctx)))
	}
	for typ, vs := range nested {
		out[typ] = cty.TupleVal(vs)
	}
	return out
}

// computed adds the attributes Google computes that bindings refer to.
func computed(typ string, attrs map[string]cty.Value) map[string]cty.Value {
	str := func(name string) (string, bool) {
		v, ok := attrs[name]
		if !ok || v.Type() != cty.String {
			return "", false
		}
		return v.AsString(), true
	}
	switch typ {
	case "google_service_account":
		if id, ok := str("account_id"); ok {
			email := id + "@" + testProject + ".iam.gserviceaccount.com"
			attrs["email"] = cty.StringVal(email)
			attrs["name"] = cty.StringVal("projects/" + testProject + "/serviceAccounts/" + email)
		}
	case "google_project_iam_custom_role":
		if id, ok := str("role_id"); ok {
			attrs["name"] = cty.StringVal("projects/" + testProject + "/roles/" + id)
			attrs["id"] = attrs["name"]
		}
	case "google_artifact_registry_repository":
		id, ok1 := str("repository_id")
		loc, ok2 := str("location")
		if ok1 && ok2 {
			attrs["name"] = cty.StringVal("projects/" + testProject + "/locations/" + loc + "/repositories/" + id)
		}
	}
	return attrs
}

// resource returns the one resource of type and name.
func (c config) resource(t *testing.T, typ, name string) *hclsyntax.Block {
	t.Helper()
	for _, blocks := range c.blocks("resource") {
		for _, b := range blocks {
			if b.Labels[0] == typ && b.Labels[1] == name {
				return b
			}
		}
	}
	t.Fatalf("no resource %s.%s", typ, name)
	return nil
}

func eval(t *testing.T, ctx *hcl.EvalContext, b *hclsyntax.Block, attr string) cty.Value {
	t.Helper()
	a, ok := b.Body.Attributes[attr]
	if !ok {
		t.Fatalf("%s.%s has no %s", b.Labels[0], b.Labels[1], attr)
	}
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s.%s.%s cannot be evaluated: %s", b.Labels[0], b.Labels[1], attr, diags.Error())
	}
	return v
}

// evalExpr evaluates an expression such as a resource's computed attribute.
func evalExpr(t *testing.T, ctx *hcl.EvalContext, src string) string {
	t.Helper()
	e, diags := hclsyntax.ParseExpression([]byte(src), "test", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	v, diags := e.Value(ctx)
	if diags.HasErrors() || v.Type() != cty.String {
		t.Fatalf("%s cannot be evaluated to a string: %s", src, diags.Error())
	}
	return v.AsString()
}

func evalString(t *testing.T, ctx *hcl.EvalContext, b *hclsyntax.Block, attr string) string {
	t.Helper()
	v := eval(t, ctx, b, attr)
	if v.Type() != cty.String || !v.IsKnown() || v.IsNull() {
		t.Fatalf("%s.%s.%s is %#v, not a string", b.Labels[0], b.Labels[1], attr, v)
	}
	return v.AsString()
}

// installed is one component of ms2m (the agent, the manager) as the
// Terraform installs it: the chart rendered by helm with the release's
// name, namespace and values.
type installed struct {
	namespace      string
	serviceAccount *corev1.ServiceAccount
	pod            corev1.PodSpec
}

func installedAgent(t *testing.T, c config, ctx *hcl.EvalContext) installed {
	t.Helper()
	return installedComponent(t, c, ctx, "agent")
}

func installedManager(t *testing.T, c config, ctx *hcl.EvalContext) installed {
	t.Helper()
	return installedComponent(t, c, ctx, "manager")
}

// installedComponent renders the chart and returns the one workload (the
// agent's DaemonSet, the manager's Deployment) labelled
// app.kubernetes.io/component=component, with the ServiceAccount it runs as.
func installedComponent(t *testing.T, c config, ctx *hcl.EvalContext, component string) installed {
	t.Helper()
	release := c.resource(t, "helm_release", "ms2m")
	name, ns, chart := evalString(t, ctx, release, "name"), evalString(t, ctx, release, "namespace"), evalString(t, ctx, release, "chart")
	args := []string{"template", name, chart, "--namespace", ns, "--kube-version", "v1.33.0"}
	for _, item := range release.Body.Attributes["values"].Expr.(*hclsyntax.TupleConsExpr).Exprs {
		call := item.(*hclsyntax.FunctionCallExpr) // yamlencode (TestHelmValuesExistInTheChart)
		v, diags := call.Args[0].Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("helm_release.ms2m values cannot be evaluated: %s", diags.Error())
		}
		js, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "values.json")
		if err := os.WriteFile(f, js, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	out, err := testenv.Helm(t.Context(), t.TempDir(), args...)
	if err != nil {
		t.Fatal(err)
	}
	a := installed{namespace: ns}
	var pods []corev1.PodSpec
	accounts := map[string]*corev1.ServiceAccount{}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch u.GetKind() {
		case "DaemonSet":
			ds := &appsv1.DaemonSet{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ds); err != nil {
				t.Fatal(err)
			}
			if ds.Spec.Template.Labels["app.kubernetes.io/component"] == component {
				pods = append(pods, ds.Spec.Template.Spec)
			}
		case "Deployment":
			d := &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d); err != nil {
				t.Fatal(err)
			}
			if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
				pods = append(pods, d.Spec.Template.Spec)
			}
		case "ServiceAccount":
			sa := &corev1.ServiceAccount{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, sa); err != nil {
				t.Fatal(err)
			}
			accounts[sa.Namespace+"/"+sa.Name] = sa
		}
	}
	if len(pods) != 1 {
		t.Fatalf("the chart renders %d %s workloads, want 1", len(pods), component)
	}
	a.pod = pods[0]
	a.serviceAccount = accounts[ns+"/"+a.pod.ServiceAccountName]
	if a.serviceAccount == nil {
		t.Fatalf("the %s runs as ServiceAccount %q, which the chart does not create in %s", component, a.pod.ServiceAccountName, ns)
	}
	return a
}

// googleAccount is the Google service account a component's ServiceAccount
// names in iam.gke.io/gcp-service-account: its email, and its name as IAM
// bindings on it give it. It must be one the Terraform creates.
func googleAccount(t *testing.T, c config, ctx *hcl.EvalContext, who string, a installed) (email, name string) {
	t.Helper()
	email = a.serviceAccount.Annotations["iam.gke.io/gcp-service-account"]
	if email == "" {
		t.Fatalf("the %s's ServiceAccount %s has no iam.gke.io/gcp-service-account annotation: %v", who, a.serviceAccount.Name, a.serviceAccount.Annotations)
	}
	for _, blocks := range c.blocks("resource") {
		for _, b := range blocks {
			if b.Labels[0] == "google_service_account" && evalExpr(t, ctx, "google_service_account."+b.Labels[1]+".email") == email {
				return email, "projects/" + testProject + "/serviceAccounts/" + email
			}
		}
	}
	t.Fatalf("the %s's ServiceAccount names %s, a Google service account the Terraform does not create", who, email)
	return "", ""
}

// workloadIdentityUsers lists the members that may act as the Google
// service account named name (roles/iam.workloadIdentityUser on it).
func workloadIdentityUsers(t *testing.T, c config, ctx *hcl.EvalContext, name string) []string {
	t.Helper()
	var users []string
	for _, blocks := range c.blocks("resource") {
		for _, b := range blocks {
			if !strings.HasPrefix(b.Labels[0], "google_service_account_iam_") || evalString(t, ctx, b, "role") != "roles/iam.workloadIdentityUser" {
				continue
			}
			if evalString(t, ctx, b, "service_account_id") != name {
				continue
			}
			users = append(users, evalString(t, ctx, b, "member"))
		}
	}
	return users
}

// kubernetesMember is the Workload Identity member of a component's
// ServiceAccount, in the cluster's pool and the namespace installed into.
func kubernetesMember(t *testing.T, ctx *hcl.EvalContext, a installed) string {
	t.Helper()
	if pool := evalExpr(t, ctx, "google_container_cluster.ms2m.workload_identity_config[0].workload_pool"); pool != testProject+".svc.id.goog" {
		t.Errorf("the cluster's Workload Identity pool is %s, want %s.svc.id.goog", pool, testProject)
	}
	return "serviceAccount:" + testProject + ".svc.id.goog[" + a.namespace + "/" + a.serviceAccount.Name + "]"
}

// The agent pushes as the checkpoint pusher through Workload Identity:
// its ServiceAccount, as the chart names it in the namespace the
// Terraform installs into, is annotated with the pusher's email and is the
// one member allowed to act as the pusher; and it holds no registry
// Secret.
func TestAgentPushesThroughWorkloadIdentity(t *testing.T) {
	c := load(t)
	ctx := c.evalContext(t)
	a := installedAgent(t, c, ctx)

	_, pusher := googleAccount(t, c, ctx, "agent", a)
	want := kubernetesMember(t, ctx, a)
	if users := workloadIdentityUsers(t, c, ctx, pusher); !slices.Equal(users, []string{want}) {
		t.Errorf("members that may act as the pusher (roles/iam.workloadIdentityUser): %v, want only the agent's ServiceAccount %s", users, want)
	}

	for _, e := range a.pod.Containers[0].Env {
		if e.Name == "DOCKER_CONFIG" {
			t.Errorf("the agent reads registry credentials from DOCKER_CONFIG=%s: it needs none on GKE", e.Value)
		}
	}
	for _, v := range a.pod.Volumes {
		if v.Secret != nil {
			t.Errorf("the agent mounts Secret %s", v.Secret.SecretName)
		}
	}
}

// The manager deletes checkpoint images as the checkpoint deleter through
// Workload Identity: its ServiceAccount, as the chart names it in the
// namespace the Terraform installs into, is annotated with the deleter's
// email and is the one member allowed to act as the deleter. The deleter
// is not the pusher: the agent cannot delete, nor the manager push.
func TestManagerDeletesThroughWorkloadIdentity(t *testing.T) {
	c := load(t)
	ctx := c.evalContext(t)
	m := installedManager(t, c, ctx)

	email, deleter := googleAccount(t, c, ctx, "manager", m)
	if pusher, _ := googleAccount(t, c, ctx, "agent", installedAgent(t, c, ctx)); pusher == email {
		t.Errorf("the manager and the agent act as the same Google service account %s: each needs its own, with only its own permissions", email)
	}
	want := kubernetesMember(t, ctx, m)
	if users := workloadIdentityUsers(t, c, ctx, deleter); !slices.Equal(users, []string{want}) {
		t.Errorf("members that may act as the deleter (roles/iam.workloadIdentityUser): %v, want only the manager's ServiceAccount %s", users, want)
	}
	for _, e := range m.pod.Containers[0].Env {
		if e.Name == "DOCKER_CONFIG" {
			t.Errorf("the manager reads registry credentials from DOCKER_CONFIG=%s: it needs none on GKE", e.Value)
		}
	}
}

// No service account key exists: a key is a long-lived credential, and
// Terraform keeps it in its state.
func TestNoServiceAccountKey(t *testing.T) {
	c := load(t)
	for _, typ := range []string{"resource", "data"} {
		for file, blocks := range c.blocks(typ) {
			for _, b := range blocks {
				if b.Labels[0] == "google_service_account_key" {
					t.Errorf("%s: %s %s.%s: use Workload Identity instead of a key", file, typ, b.Labels[0], b.Labels[1])
				}
			}
		}
	}
}

// onlyGrant checks that member (a Google service account) has exactly one
// grant, on the checkpoint repository (not the project), of a custom role
// of the module, and returns that role's permissions, sorted.
func onlyGrant(t *testing.T, c config, ctx *hcl.EvalContext, who, member string) []string {
	t.Helper()
	var grants []*hclsyntax.Block
	for _, blocks := range c.blocks("resource") {
		for _, b := range blocks {
			typ := b.Labels[0]
			switch {
			case strings.HasSuffix(typ, "_iam_member"):
				if evalString(t, ctx, b, "member") == member {
					grants = append(grants, b)
				}
			case strings.HasSuffix(typ, "_iam_binding"), strings.HasSuffix(typ, "_iam_policy"):
				t.Errorf("%s.%s: authoritative IAM resources would remove grants made outside this module; use *_iam_member", typ, b.Labels[1])
			}
		}
	}
	if len(grants) != 1 {
		var names []string
		for _, g := range grants {
			names = append(names, g.Labels[0]+"."+g.Labels[1])
		}
		t.Fatalf("the %s %s has %d grants (%v), want one, on the checkpoint repository", who, member, len(grants), names)
	}
	g := grants[0]
	repo := "google_artifact_registry_repository.checkpoints."
	if g.Labels[0] != "google_artifact_registry_repository_iam_member" ||
		evalString(t, ctx, g, "repository") != evalExpr(t, ctx, repo+"name") && evalString(t, ctx, g, "repository") != evalExpr(t, ctx, repo+"repository_id") {
		t.Fatalf("the %s's grant is %s.%s, not on the checkpoint repository", who, g.Labels[0], g.Labels[1])
	}
	role := evalString(t, ctx, g, "role")
	var perms []string
	for _, blocks := range c.blocks("resource") {
		for _, b := range blocks {
			if b.Labels[0] == "google_project_iam_custom_role" && evalExpr(t, ctx, "google_project_iam_custom_role."+b.Labels[1]+".name") == role {
				for _, p := range eval(t, ctx, b, "permissions").AsValueSlice() {
					perms = append(perms, p.AsString())
				}
			}
		}
	}
	if perms == nil {
		t.Fatalf("the %s's role is %s, not a custom role of the module: predefined Artifact Registry roles grant more than it needs", who, role)
	}
	slices.Sort(perms)
	return perms
}

// The agents' Google identity may push checkpoint images into the
// checkpoint repository and do nothing else: one grant, on that repository
// (not the project), of a role with exactly the permissions a push needs.
// A compromised agent cannot list, delete or retag images elsewhere.
func TestCheckpointPusherMayOnlyPush(t *testing.T) {
	c := load(t)
	ctx := c.evalContext(t)
	email, _ := googleAccount(t, c, ctx, "agent", installedAgent(t, c, ctx))
	if perms := onlyGrant(t, c, ctx, "pusher", "serviceAccount:"+email); !slices.Equal(perms, pushPermissions) {
		t.Errorf("the pusher's role has permissions %v, want exactly %v", perms, pushPermissions)
	}
}

// The manager's Google identity may delete checkpoint images from the
// checkpoint repository and do nothing else: one grant, on that repository
// (not the project), of a role with exactly the permissions a Docker API
// delete of a tag and a manifest needs. In particular it cannot read them
// (no downloadArtifacts): a compromised manager can destroy checkpoint
// images but not copy the process memory in them, and cannot touch any
// other repository.
func TestCheckpointDeleterMayOnlyDelete(t *testing.T) {
	c := load(t)
	ctx := c.evalContext(t)
	email, _ := googleAccount(t, c, ctx, "manager", installedManager(t, c, ctx))
	perms := onlyGrant(t, c, ctx, "deleter", "serviceAccount:"+email)
	if !slices.Equal(perms, deletePermissions) {
		t.Errorf("the deleter's role has permissions %v, want exactly %v", perms, deletePermissions)
	}
	if slices.Contains(perms, "artifactregistry.repositories.downloadArtifacts") {
		t.Error("the deleter may read checkpoint images (downloadArtifacts): the manager never reads a process's memory")
	}
}

// Every Google service account id and custom role id the module derives
// from cluster_name is valid for every cluster_name the variable's
// validation accepts: a service account id is 6 to 30 characters
// ([a-z][-a-z0-9]*[a-z0-9]), a custom role id at most 64 of [a-zA-Z0-9_.].
// Otherwise apply would fail, long after plan, for the longest names.
func TestIDsFitEveryAcceptedClusterName(t *testing.T) {
	c := load(t)
	var validations []*hclsyntax.Block
	for _, blocks := range c.blocks("variable") {
		for _, b := range blocks {
			if b.Labels[0] == "cluster_name" {
				for _, v := range b.Body.Blocks {
					if v.Type == "validation" {
						validations = append(validations, v)
					}
				}
			}
		}
	}
	if len(validations) == 0 {
		t.Fatal("variable cluster_name has no validation: service account ids derived from it could be too long")
	}
	accepted := func(name string) bool {
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{"cluster_name": cty.StringVal(name)})},
			Functions: map[string]function.Function{"can": tryfunc.CanFunc, "regex": stdlib.RegexFunc, "length": stdlib.LengthFunc},
		}
		for _, v := range validations {
			ok, diags := v.Body.Attributes["condition"].Expr.Value(ctx)
			if diags.HasErrors() {
				t.Fatalf("cluster_name's validation cannot be evaluated: %s", diags.Error())
			}
			if ok.False() {
				return false
			}
		}
		return true
	}
	longest := ""
	for n := 1; n <= 100; n++ {
		if name := "a" + strings.Repeat("0", n-1); accepted(name) {
			longest = name
		}
	}
	if longest == "" || accepted("a"+strings.Repeat("0", 100)) {
		t.Fatalf("cluster_name's validation accepts no name, or names of any length")
	}
	serviceAccountID := regexp.MustCompile(`^[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
	roleID := regexp.MustCompile(`^[a-zA-Z0-9_.]{3,64}$`)
	for _, name := range []string{longest, "a", "ms2m"} {
		ctx := c.evalContextWith(t, map[string]cty.Value{"cluster_name": cty.StringVal(name)})
		for _, blocks := range c.blocks("resource") {
			for _, b := range blocks {
				switch b.Labels[0] {
				case "google_service_account":
					if id := evalString(t, ctx, b, "account_id"); !serviceAccountID.MatchString(id) {
						t.Errorf("cluster_name %q (%d characters) makes google_service_account.%s's account_id %q (%d), not a valid service account id", name, len(name), b.Labels[1], id, len(id))
					}
				case "google_project_iam_custom_role":
					if id := evalString(t, ctx, b, "role_id"); !roleID.MatchString(id) {
						t.Errorf("cluster_name %q makes google_project_iam_custom_role.%s's role_id %q, not a valid role id", name, b.Labels[1], id)
					}
				}
			}
		}
	}
}
