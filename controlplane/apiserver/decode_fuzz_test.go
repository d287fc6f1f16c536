package apiserver

import (
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
)

// FuzzDecodeBody feeds request bodies, JSON and YAML, to the decoding
// path of every resource, through defaults and validation as a create
// takes them: every body is either an object or a Status error of 400,
// 413 or 422, and none panics or expands past the body limit.
func FuzzDecodeBody(f *testing.F) {
	f.Add(0, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`))
	f.Add(1, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n    nodePort: 30000\n"))
	f.Add(2, []byte("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"))
	f.Add(3, []byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`))
	f.Add(4, []byte("kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata: {k: v}\nunknown: 1\n"))
	f.Add(5, []byte("a: &v xxxxxxxx\nb: [*v, *v, *v]\n---\n]\n\tx: [\n"))
	resources := api.All()
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		if len(body) > api.MaxDocumentBytes {
			return // the HTTP layer refuses these before decoding
		}
		r := resources[uint(which)%uint(len(resources))]
		tgt := target{resource: r}
		if r.Namespaced {
			tgt.namespace = "default"
		}
		obj, err := decodeBody(tgt, body)
		if err != nil {
			var st apierrors.APIStatus
			if !errors.As(err, &st) {
				t.Fatalf("%s: error is not a Status: %v", r.Name, err)
			}
			switch code := st.Status().Code; code {
			case 400, 413, 422:
			default:
				t.Fatalf("%s: answered %d: %v", r.Name, code, err)
			}
			return
		}
		api.Default(obj)
		_ = api.Validate(r, obj)
	})
}
