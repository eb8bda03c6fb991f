package kubelet

import (
	"net/http"
	"net/http/httptest"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The simulated kubelet's checkpoint API remembers the callers it let in,
// as the kubelet's webhook authn/authz caches do (2 and 5 minutes by
// default): a checkpoint by a caller it already let in costs no
// TokenReview and no SubjectAccessReview, which a loaded API server would
// otherwise add to the source's checkpoint pause. A refusal is asked
// again each time. (FAKE API server: what is tested is which reviews the
// kubelet asks for.)
func TestTheKubeletRemembersTheCallersItLetIn(t *testing.T) {
	cs := fake.NewClientset()
	reviews := map[string]int{}
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		reviews["token "+tr.Spec.Token]++
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: tr.Spec.Token}}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		reviews["access "+sar.Spec.User]++
		sar.Status.Allowed = sar.Spec.User == "agent" && sar.Spec.ResourceAttributes.Subresource == "checkpoint" && sar.Spec.ResourceAttributes.Name == "node-1"
		return true, sar, nil
	})
	n := &node{f: &Fleet{opts: Options{Client: cs}}, spec: NodeSpec{Name: "node-1"}}
	call := func(token string) int {
		req := httptest.NewRequest(http.MethodPost, "/checkpoint/shop/orders/app", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		if n.authorize(req.Context(), w, req) {
			return http.StatusOK
		}
		return w.Code
	}
	for range 3 {
		if code := call("agent"); code != http.StatusOK {
			t.Fatalf("the agent: %d, want let in", code)
		}
		if code := call("tenant"); code != http.StatusForbidden {
			t.Fatalf("a tenant: %d, want 403", code)
		}
	}
	want := map[string]int{"token agent": 1, "access agent": 1, "token tenant": 1, "access tenant": 3}
	for k, v := range want {
		if reviews[k] != v {
			t.Errorf("%s reviews: %d, want %d (all: %v)", k, reviews[k], v, reviews)
		}
	}
}
