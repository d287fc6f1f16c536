package apiserver

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/store/storetest"
)

// FuzzJoin sends the join endpoint arbitrary bodies with the node-join
// token: each gets a credential or a Status of 400, 403, 413, 422 or 429,
// never a panic or a 500.
func FuzzJoin(f *testing.F) {
	f.Add(`{"nodeName":"node-1","password":"0123456789abcdef0123","addresses":["198.18.0.2"]}`)
	f.Add(`{"nodeName":"node-1","password":"another-password-9999"}`)
	f.Add(`{"nodeName":"node-2","password":"0123456789abcdef0123","addresses":["127.0.0.1","::1","224.0.0.1"]}`)
	f.Add(`{"nodeName":"Node_3","password":"x"}`)
	f.Add(`{"nodeName":"n","password":"0123456789abcdef0123","addresses":["198.18.0.2%eth0"]}`)
	f.Add(`[]`)
	s, err := New(storetest.Open(f), Config{AdminToken: "admin", JoinToken: "join", Logger: slog.New(slog.DiscardHandler), NodeJoinRate: 1e6})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	h, err := s.Handler(ctx)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/skep/v1/join", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer join")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			var cred struct{ Token string }
			if err := json.Unmarshal(rec.Body.Bytes(), &cred); err != nil || cred.Token == "" {
				t.Fatalf("200 without a credential: %q", rec.Body.String())
			}
		case 400, 403, 413, 422, 429:
			var st metav1.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" {
				t.Fatalf("%d answer is not a Status: %q", rec.Code, rec.Body.String())
			}
		default:
			t.Fatalf("join with %q: %d %s", body, rec.Code, rec.Body.String())
		}
	})
}
