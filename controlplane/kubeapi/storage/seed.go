package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/skep-io/skep/controlplane/store"
)

// SeedRevision writes one key into an empty bucket. A fresh bucket is at
// revision 0, which the apiserver reads as "no version": the watch cache
// would list at 0, never count as synced, and never dispatch live events.
// etcd and kine start at 1 for the same reason.
func SeedRevision(ctx context.Context, st *store.Store) error {
	rev, err := st.LastRevision(ctx)
	if err != nil || rev != 0 {
		return err
	}
	_, err = st.Create(ctx, store.Key{Resource: "meta", Name: "origin"}, []byte("{}"))
	if err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("seed the bucket's first revision: %w", err)
	}
	return nil
}
