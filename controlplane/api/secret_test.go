package api_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

var secrets = api.MustLookup("secrets")

func secret(mutate func(*corev1.Secret)) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "default"}, Data: map[string][]byte{"password": []byte("hunter2")}}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func TestSecretDefaults(t *testing.T) {
	s := secret(func(s *corev1.Secret) {
		s.StringData = map[string]string{"user": "admin", "password": "from-stringData"}
	})
	api.Default(s)
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want Opaque", s.Type)
	}
	if s.StringData != nil {
		t.Errorf("stringData = %v, want it merged into data and gone", s.StringData)
	}
	if got := string(s.Data["user"]); got != "admin" {
		t.Errorf("data[user] = %q, want admin", got)
	}
	if got := string(s.Data["password"]); got != "from-stringData" {
		t.Errorf("data[password] = %q, want stringData's value (it wins over data)", got)
	}
}

func TestValidateSecret(t *testing.T) {
	cases := []struct {
		name   string
		secret *corev1.Secret
		want   []string // each in the error; none for a valid secret
	}{
		{"opaque", secret(nil), nil},
		{"bad key", secret(func(s *corev1.Secret) { s.Data["a/b"] = []byte("x") }), []string{"data[a/b]", "alphanumeric characters, '-', '_' or '.'"}},
		{"1 MiB exactly", secret(func(s *corev1.Secret) { s.Data = map[string][]byte{"a": make([]byte, 1<<20)} }), nil},
		{"over 1 MiB in total", secret(func(s *corev1.Secret) {
			s.Data = map[string][]byte{"a": make([]byte, 1<<19), "b": make([]byte, 1<<19+1)}
		}), []string{"data: Too long", "1048576"}},
		{"tls without key", secret(func(s *corev1.Secret) {
			s.Type = corev1.SecretTypeTLS
			s.Data = map[string][]byte{"tls.crt": []byte("c")}
		}), []string{"data[tls.key]: Required"}},
		{"dockerconfigjson not JSON", secret(func(s *corev1.Secret) {
			s.Type = corev1.SecretTypeDockerConfigJson
			s.Data = map[string][]byte{".dockerconfigjson": []byte("hunter2")}
		}), []string{"data[.dockerconfigjson]", "<secret contents redacted>"}},
		{"basic-auth without either key", secret(func(s *corev1.Secret) {
			s.Type = corev1.SecretTypeBasicAuth
			s.Data = nil
		}), []string{"data[username]: Required"}},
		{"service-account-token without its account", secret(func(s *corev1.Secret) { s.Type = corev1.SecretTypeServiceAccountToken }),
			[]string{"metadata.annotations[kubernetes.io/service-account.name]: Required"}},
		{"a type of one's own", secret(func(s *corev1.Secret) { s.Type = "helm.sh/release.v1" }), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api.Default(c.secret)
			errs := api.Validate(secrets, c.secret)
			msg := errs.ToAggregate()
			if len(c.want) == 0 {
				if msg != nil {
					t.Fatalf("Validate = %v, want no error", msg)
				}
				return
			}
			if msg == nil {
				t.Fatalf("Validate passed, want an error mentioning %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(msg.Error(), w) {
					t.Errorf("Validate = %v, want it to mention %q", msg, w)
				}
			}
			if strings.Contains(msg.Error(), "hunter2") {
				t.Errorf("Validate = %v: the error carries the secret's value", msg)
			}
		})
	}
}

func TestValidateSecretUpdate(t *testing.T) {
	yes := true
	immutable := secret(func(s *corev1.Secret) { s.Immutable = &yes })
	cases := []struct {
		name     string
		old, new *corev1.Secret
		want     string
	}{
		{"data of a mutable secret", secret(nil), secret(func(s *corev1.Secret) { s.Data["password"] = []byte("new") }), ""},
		{"made immutable", secret(nil), immutable, ""},
		{"type", secret(nil), secret(func(s *corev1.Secret) { s.Type = "kubernetes.io/tls-not" }), "type: Invalid value: \"kubernetes.io/tls-not\": field is immutable"},
		{"data of an immutable secret", immutable, secret(func(s *corev1.Secret) { s.Immutable = &yes; s.Data["password"] = []byte("new") }), "data: Forbidden: field is immutable when `immutable` is set"},
		{"immutable unset", immutable, secret(nil), "immutable: Forbidden: field is immutable when `immutable` is set"},
		{"labels of an immutable secret", immutable, secret(func(s *corev1.Secret) { s.Immutable = &yes; s.Labels = map[string]string{"a": "b"} }), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old, next := c.old.DeepCopy(), c.new.DeepCopy()
			api.Default(old)
			api.Default(next)
			old.ResourceVersion, next.ResourceVersion = "1", "1"
			err := api.ValidateUpdate(secrets, next, old).ToAggregate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("ValidateUpdate = %v, want no error", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("ValidateUpdate = %v, want %q", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("ValidateUpdate = %v: the error carries the secret's value", err)
			}
		})
	}
}
