package storage

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apiserver/pkg/storage"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
)

// StoreAsProgressCapable tells the apiserver that our storage answers
// RequestWatchProgress. The apiserver asks this of its etcd clients only,
// through a process-wide checker that reads an etcd version: without it the
// watch cache refuses sendInitialEvents and delegates every consistent read
// to storage. Reporting an etcd version is the only door, hence this shim.
func StoreAsProgressCapable(ctx context.Context) {
	etcdfeature.DefaultFeatureSupportChecker.CheckClient(ctx, progressCapable{}, storage.RequestWatchProgress)
}

type progressCapable struct{}

func (progressCapable) Endpoints() []string { return []string{"jetstream"} }
func (progressCapable) Status(context.Context, string) (*clientv3.StatusResponse, error) {
	return &clientv3.StatusResponse{Version: "3.6.0"}, nil
}
