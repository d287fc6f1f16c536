// Package client is how everything but the API server itself reads and
// writes objects: the CLI and the agent over HTTPS, and the scheduler and
// controllers in-process. Both implementations satisfy Interface and return
// Kubernetes StatusErrors (k8s.io/apimachinery/pkg/api/errors), so callers
// test errors with apierrors.IsNotFound, IsConflict, IsAlreadyExists...
package client

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/controlplane/api"
)

// Interface reads and writes objects of any resource.
type Interface interface {
	Get(ctx context.Context, r *api.Resource, namespace, name string) (api.Object, error)
	// List returns the objects and the resourceVersion to watch from.
	List(ctx context.Context, r *api.Resource, namespace string, opts ListOptions) ([]api.Object, string, error)
	Create(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error)
	// Update replaces an object; its resourceVersion must be the latest.
	Update(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error)
	// UpdateStatus replaces only the status (the /status subresource).
	UpdateStatus(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error)
	Delete(ctx context.Context, r *api.Resource, namespace, name string, opts DeleteOptions) error
	// Watch streams changes after opts.ResourceVersion until ctx ends or the
	// stream breaks; the channel then closes and the caller resumes from
	// the last resourceVersion it saw.
	Watch(ctx context.Context, r *api.Resource, namespace string, opts ListOptions) (<-chan Event, error)
}

// ListOptions narrow a list or watch, as Kubernetes' query parameters do.
type ListOptions struct {
	LabelSelector string // labelSelector=app=web
	FieldSelector string // fieldSelector=spec.nodeName=node-1 (pods only)
	// ResourceVersion is where a watch starts (exclusive).
	ResourceVersion string
}

// DeleteOptions are Kubernetes' delete options.
type DeleteOptions struct {
	// GracePeriodSeconds for pods: 0 removes at once; nil uses the pod's
	// terminationGracePeriodSeconds (the pod is marked terminating and its
	// node's agent stops it and removes it).
	GracePeriodSeconds *int64
	// PropagationPolicy: Background (default) deletes dependents,
	// Orphan keeps them.
	PropagationPolicy *metav1.DeletionPropagation
	// ResourceVersion, when set, must be the object's latest.
	ResourceVersion string
	// UID, when set, must be the object's: a delete meant for one object
	// never removes another of the same name created since.
	UID types.UID
	// DryRun checks the delete and answers as if it were done, changing
	// nothing (Kubernetes' dryRun=All).
	DryRun bool
}

// EventType is the type of a watch event, as Kubernetes spells it.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	// Bookmark carries only a resourceVersion to resume from.
	Bookmark EventType = "BOOKMARK"
	// Error ends a stream with a Status in Event.Status (410 Expired: the
	// resourceVersion is too old to resume from; list again).
	Error EventType = "ERROR"
)

// Event is one change. A DELETED event's object carries the name,
// namespace and resourceVersion of the deletion, and the last state when
// the server still had it.
type Event struct {
	Type   EventType
	Object api.Object
	// Status is an ERROR event's.
	Status *metav1.Status
}
