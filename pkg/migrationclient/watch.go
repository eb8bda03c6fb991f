package migrationclient

import (
	"context"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// ErrDeleted is returned by Follow when the migration is deleted (cancelled)
// before it finishes.
var ErrDeleted = errors.New("the StatefulMigration was deleted before it finished")

// Follow watches the migration key until it is Completed or Failed and
// returns it then. observe sees every version the watch delivers, in order
// (the watch may skip intermediate versions, never the last one). Follow
// returns ctx's error when ctx ends first, and ErrDeleted when the
// migration is deleted.
func Follow(ctx context.Context, c client.WithWatch, key client.ObjectKey, observe func(*v1.StatefulMigration)) (*v1.StatefulMigration, error) {
	var last *v1.StatefulMigration
	_, err := watchtools.UntilWithSync(ctx, listWatch(c, key), &v1.StatefulMigration{}, nil, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Deleted:
			return false, ErrDeleted
		case watch.Added, watch.Modified:
			m, ok := ev.Object.(*v1.StatefulMigration)
			if !ok {
				return false, nil
			}
			last = m
			if observe != nil {
				observe(m)
			}
			return m.Status.Phase.IsTerminal(), nil
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
		return last, err
	}
	return last, nil
}

// WaitGone watches the migration key until it no longer exists: after a
// deletion, the controller rolls the migration back before it lets go.
func WaitGone(ctx context.Context, c client.WithWatch, key client.ObjectKey) error {
	absent := func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(key.String())
		return !exists, err
	}
	_, err := watchtools.UntilWithSync(ctx, listWatch(c, key), &v1.StatefulMigration{}, absent, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Deleted, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("StatefulMigration %s is still there: %w", key, ctx.Err())
	}
	return err
}

// listWatch lists and watches the one migration named by key.
func listWatch(c client.WithWatch, key client.ObjectKey) *cache.ListWatch {
	opts := func(o metav1.ListOptions) *client.ListOptions {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", key.Name).String()
		return &client.ListOptions{Namespace: key.Namespace, Limit: o.Limit, Continue: o.Continue, Raw: &o}
	}
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list := &v1.StatefulMigrationList{}
			return list, c.List(ctx, list, opts(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return c.Watch(ctx, &v1.StatefulMigrationList{}, opts(o))
		},
	}
}
