package apiserver

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/store/storetest"
)

// FuzzDecodeBody posts request bodies, JSON and YAML, to every resource
// as a dry-run create, through the whole server: authorization, the YAML
// bound, the generic server's decoder, skep's defaults and validation.
// Every body is either an object or a Status error a client can act on
// (400, 409, 413, 415, 422), and none panics or is a 500.
func FuzzDecodeBody(f *testing.F) {
	f.Add(0, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`))
	f.Add(1, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n    nodePort: 30000\n"))
	f.Add(2, []byte("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"))
	f.Add(3, []byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`))
	f.Add(5, []byte("kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata: {k: v}\nunknown: 1\n"))
	f.Add(7, []byte("a: &v xxxxxxxx\nb: [*v, *v, *v]\n---\n]\n\tx: [\n"))
	s, err := New(storetest.Open(f), Config{AdminToken: "admin", JoinToken: "join", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	if err := s.Bootstrap(ctx); err != nil {
		f.Fatal(err)
	}
	h, err := s.Handler(ctx)
	if err != nil {
		f.Fatal(err)
	}
	resources := api.All()
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		if len(body) > api.MaxDocumentBytes {
			return // refused by size before decoding (TestBodyLimits)
		}
		r := resources[uint(which)%uint(len(resources))]
		ct := "application/json"
		if which%2 == 1 {
			ct = "application/yaml"
		}
		req := httptest.NewRequest(http.MethodPost, r.Path("default", "")+"?dryRun=All&fieldValidation=Strict", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer admin")
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 201, 400, 409, 413, 415, 422:
		default:
			t.Fatalf("%s, %s body %q: answered %d: %s", r.Name, ct, body, rec.Code, rec.Body.String())
		}
	})
}
