package agent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// A checkpoint CRIU refuses for a TCP connection is tried again (a probe's
// connection is brief); one that stays refused fails naming both fixes,
// and any other failure is not retried.
func TestCheckpointRefusedForAConnectionIsRetriedThenExplained(t *testing.T) {
	const refusal = `checkpointing of shop/orders/app failed (CRIU: Connected TCP socket, consider using --tcp-established option (10.0.0.9:8080 -> 10.0.0.7:41234 ESTABLISHED))`
	for _, tc := range []struct {
		name     string
		refusals int    // answers before a success
		other    string // a failure that is not about connections
		calls    int32
		err      []string
	}{
		{name: "a brief connection", refusals: 1, calls: 2},
		{name: "a connection that stays", refusals: 100, calls: checkpointAttempts,
			err: []string{"Connected TCP socket", v1.AnnotationAppQuiescePath, "tcp-close", "3 attempts"}},
		{name: "another failure", other: "dump failed: vDSO mismatch", calls: 1, err: []string{"vDSO mismatch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				n := calls.Add(1)
				switch {
				case tc.other != "":
					http.Error(w, tc.other, http.StatusInternalServerError)
				case int(n) <= tc.refusals:
					http.Error(w, refusal, http.StatusInternalServerError)
				default:
					_, _ = w.Write([]byte(`{"items":["/var/lib/kubelet/checkpoints/checkpoint-orders_shop-app-1.tar"]}`))
				}
			}))
			defer kubelet.Close()
			host, port, _ := net.SplitHostPort(strings.TrimPrefix(kubelet.URL, "https://"))
			p, _ := strconv.Atoi(port)
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{
				Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: host}},
				DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(p)}},
			}}
			r := &Reconciler{Client: fake.NewClientBuilder().WithObjects(node).Build(), Kubelet: kubelet.Client(), Opts: Options{NodeName: "node-1"}}
			m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: "shop"},
				Spec: v1.StatefulMigrationSpec{SourcePod: "orders", Containers: []string{"app"}}}
			archive, _, err := r.checkpointRetrying(context.Background(), m, func() (string, error) { return r.checkpoint(context.Background(), m) })
			if calls.Load() != tc.calls {
				t.Errorf("%d checkpoint calls, want %d", calls.Load(), tc.calls)
			}
			if len(tc.err) == 0 {
				if err != nil || archive == "" {
					t.Fatalf("archive %q, err %v", archive, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkpoint succeeded (%s), want a failure", archive)
			}
			for _, want := range tc.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the failure does not say %q: %v", want, err)
				}
			}
		})
	}
}
