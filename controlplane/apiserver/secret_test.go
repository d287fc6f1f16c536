package apiserver_test

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

// syncBuffer is a log destination the server's goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretDataStaysOutOfLogs writes Secrets as a user and Helm do
// (create, update, stringData, invalid ones) with the server logging
// everything at debug level, and checks that no value, plain or base64,
// reaches the log or an error, while the API answers the data back.
func TestSecretDataStaysOutOfLogs(t *testing.T) {
	var logs syncBuffer
	s := apiservertest.StartServerWith(t, func(c *apiserver.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	secrets := api.MustLookup("secrets")
	values := []string{"s3cr3t-created", "s3cr3t-string-data", "s3cr3t-updated", "s3cr3t-invalid", "s3cr3t-too-big"}

	created, err := admin.Create(ctx, secrets, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"},
		Data:       map[string][]byte{"password": []byte(values[0])},
		StringData: map[string]string{"token": values[1]},
	})
	if err != nil {
		t.Fatal(err)
	}
	sec := created.(*corev1.Secret)
	if sec.Type != corev1.SecretTypeOpaque || string(sec.Data["password"]) != values[0] || string(sec.Data["token"]) != values[1] || sec.StringData != nil {
		t.Fatalf("created Secret: type %q data %q stringData %q; want Opaque, both keys in data, no stringData", sec.Type, sec.Data, sec.StringData)
	}
	sec.Data["password"] = []byte(values[2])
	if _, err := admin.Update(ctx, secrets, sec); err != nil {
		t.Fatal(err)
	}
	got, err := admin.Get(ctx, secrets, "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	if v := string(got.(*corev1.Secret).Data["password"]); v != values[2] {
		t.Fatalf("data[password] after update = %q, want %q", v, values[2])
	}

	bad := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "bad-key", Namespace: "default"}, Data: map[string][]byte{"a/b": []byte(values[3])}},
		{ObjectMeta: metav1.ObjectMeta{Name: "bad-json", Namespace: "default"}, Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{".dockerconfigjson": []byte(values[3])}},
		{ObjectMeta: metav1.ObjectMeta{Name: "too-big", Namespace: "default"}, Data: map[string][]byte{"a": bytes.Repeat([]byte(values[4]), (1<<20)/len(values[4])+1)}},
	}
	var answers []string
	for _, b := range bad {
		_, err := admin.Create(ctx, secrets, b)
		if !apierrors.IsInvalid(err) && !apierrors.IsRequestEntityTooLargeError(err) {
			t.Fatalf("create Secret %s: %v, want it refused as invalid", b.Name, err)
		}
		answers = append(answers, err.Error())
	}
	// The latest copy: a stale one is a 409 before any validation, as in
	// Kubernetes.
	fresh := got.(*corev1.Secret).DeepCopy()
	fresh.Type = corev1.SecretTypeTLS
	if _, err := admin.Update(ctx, secrets, fresh); !apierrors.IsInvalid(err) {
		t.Fatalf("update of a Secret's type: %v, want invalid (type is immutable)", err)
	} else {
		answers = append(answers, err.Error())
	}

	out := logs.String()
	if !strings.Contains(out, "db") {
		t.Fatalf("the server logged nothing about the Secret; the test would prove nothing:\n%s", out)
	}
	for _, v := range values {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))[:12]} {
			if strings.Contains(out, form) {
				t.Errorf("the server's log holds the secret value %q (as %q):\n%s", v, form, out)
			}
			for _, a := range answers {
				if strings.Contains(a, form) {
					t.Errorf("an error answer holds the secret value %q: %s", v, a)
				}
			}
		}
	}
}
