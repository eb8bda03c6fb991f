package main

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/ms2m/ms2m/internal/expect"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func TestCancelDeletes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status *v1.StatefulMigrationStatus
		says   string
	}{
		{"running: rolled back", ptr.To(replayingStatus()), "statefulmigration/m deleted: the controller rolls back from Replaying: it removes the target pod and resumes the source"},
		{"not started", nil, "statefulmigration/m deleted: the source was not touched yet"},
		{"completed: only the record", ptr.To(completedStatus()), "statefulmigration/m deleted: it had already Completed, so only its record is removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t)
			var opts []migrationOption
			if tc.status != nil {
				opts = append(opts, withStatus(*tc.status))
			}
			newMigration(t, ns, "m", opts...)
			out, stderr, code := kms2m(t, "cancel", "m", "-n", ns)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			expectContains(t, "cancel", out, tc.says)
			err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "m"}, &v1.StatefulMigration{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("after cancel, get: %v; want NotFound", err)
			}
		})
	}
}

// TestCancelWaitReturnsOnceTheControllerLetsGo holds the migration with the
// controller's finalizer, as during a rollback: cancel --wait returns only
// when the finalizer is removed and the object gone.
func TestCancelWaitReturnsOnceTheControllerLetsGo(t *testing.T) {
	ns := namespace(t)
	m := newMigration(t, ns, "m", withFinalizer(), withStatus(replayingStatus()))
	p := start(t, "cancel", "m", "--wait", "-n", ns)
	p.expectOutput(t, "waiting for the controller to let go of m...")
	key := client.ObjectKeyFromObject(m)
	expect.Eventually(t, "deletion requested", func() error {
		if err := env.Client.Get(context.Background(), key, m); err != nil {
			return err
		}
		if m.DeletionTimestamp == nil {
			return errNotYet
		}
		return nil
	})
	select {
	case code := <-p.done:
		t.Fatalf("cancel --wait ended (exit %d) while the finalizer holds the object", code)
	default:
	}
	controllerutil.RemoveFinalizer(m, v1.FinalizerRollback)
	if err := env.Client.Update(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, p.err.String())
	}
	expectContains(t, "cancel --wait", p.out.String(), "statefulmigration/m is gone")
}

func TestCancelOfAMissingMigration(t *testing.T) {
	ns := namespace(t)
	_, stderr, code := kms2m(t, "cancel", "nope", "-n", ns)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	expectContains(t, "stderr", stderr, `StatefulMigration "nope" not found in namespace "`+ns+`": nothing to cancel`)
}
