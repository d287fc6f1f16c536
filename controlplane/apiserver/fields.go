package apiserver

import (
	"reflect"

	"github.com/skep-io/skep/controlplane/api"
)

// The Kubernetes types keep desired state in a field named Spec and
// observed state in one named Status; these helpers move between them
// without a case per kind.

func fieldOf(obj api.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj).Elem()
	return v.FieldByName(name)
}

func specOf(obj api.Object) any {
	f := fieldOf(obj, "Spec")
	if !f.IsValid() {
		return nil
	}
	return f.Interface()
}

// copyStatus sets dst's status to src's.
func copyStatus(src, dst api.Object) {
	s, d := fieldOf(src, "Status"), fieldOf(dst, "Status")
	if s.IsValid() && d.IsValid() {
		d.Set(s)
	}
}

// withStatusOnly returns a copy of old carrying next's status: a write to
// /status changes nothing else.
func withStatusOnly(old, next api.Object) api.Object {
	out := old.DeepCopyObject().(api.Object)
	copyStatus(next, out)
	out.SetResourceVersion(next.GetResourceVersion())
	return out
}

func nodeNamed(name string) api.Object {
	n := api.MustLookup("nodes").New()
	n.SetName(name)
	return n
}
