package store

import (
	"regexp"
	"strings"
	"testing"
)

// The rules nats.go's jetstream package applies to a KV key (keyValid)
// and to a watch filter (searchKeyValid).
var (
	kvKeyRe     = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)
	kvFilterRe  = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9*]*[>]?$`)
	attackNames = []string{"*", ">", "%00", "\x00", "a=b", "a.b", "a b", "ünï", "_", "", ".", "..", "a..b", ".a", "a.", "=", "_5F", "_2A", "A", "a/b", "\xff", "a\nb"}
)

func kvKeyValid(key string, re *regexp.Regexp) bool {
	return key != "" && key[0] != '.' && key[len(key)-1] != '.' && !strings.Contains(key, "..") && re.MatchString(key)
}

// oldSubject is how keys were written before the encoding: data dirs hold
// such keys, so names that were valid then must still encode the same.
func oldSubject(k Key) string {
	ns := k.Namespace
	if ns == "" {
		ns = "_"
	}
	return k.Resource + "." + ns + "." + strings.ReplaceAll(k.Name, ".", "=")
}

func TestOldKeysUnchanged(t *testing.T) {
	keys := []Key{
		{"pods", "default", "web-1"},
		{"pods", "kube-system", "coredns-5d78c9869d-abcde"},
		{"configmaps", "default", "kube-root-ca.crt"},
		{"nodes", "", "node-1.example.com"},
		{"clusterips", "", "10.96.0.1"},
		{"nodetokens", "", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		{"namespaces", "", "default"},
	}
	for _, k := range keys {
		got, err := subject(k)
		if err != nil || got != oldSubject(k) {
			t.Errorf("subject(%v) = %q, %v; want %q as before", k, got, err, oldSubject(k))
		}
		if back, ok := parseSubject(oldSubject(k)); !ok || back != k {
			t.Errorf("parseSubject(%q) = %v, %v; want %v", oldSubject(k), back, ok, k)
		}
	}
}

func TestKeyEncodingIsInjective(t *testing.T) {
	seen := map[string]string{}
	for _, s := range attackNames {
		enc := encodeToken(s)
		if other, ok := seen[enc]; ok {
			t.Errorf("%q and %q both encode to %q", s, other, enc)
		}
		seen[enc] = s
		if !kvKeyValid(enc, kvKeyRe) || strings.Contains(enc, ".") {
			t.Errorf("encodeToken(%q) = %q: not one KV key token", s, enc)
		}
		if dec, err := decodeToken(enc); err != nil || dec != s {
			t.Errorf("decodeToken(encodeToken(%q)) = %q, %v", s, dec, err)
		}
	}
	// The cluster scope is the empty namespace, never one named "_".
	cluster, _ := subject(Key{"roles", "", "x"})
	named, _ := subject(Key{"roles", "_", "x"})
	if cluster == named {
		t.Errorf("cluster scope and namespace \"_\" share the key %q", cluster)
	}
}

func TestFilterIsNeverAWildcard(t *testing.T) {
	for _, ns := range attackNames {
		if ns == "" {
			continue // "" is every namespace, on purpose
		}
		f, err := filter("pods", ns)
		if err != nil {
			t.Fatal(err)
		}
		want := "pods." + encodeToken(ns) + ".*"
		if f != want || strings.ContainsAny(strings.TrimSuffix(f, ".*"), "*>") {
			t.Errorf("filter(pods, %q) = %q; want %q, with no wildcard before the name", ns, f, want)
		}
	}
}

func TestDecodeRefusesForeignTokens(t *testing.T) {
	for _, tok := range []string{"", "a.b", "_", "_4", "_2a", "_41", "_2E", "_ZZ", "a*", "a>", "ü"} {
		if dec, err := decodeToken(tok); err == nil && encodeToken(dec) != tok {
			t.Errorf("decodeToken(%q) = %q, which encodes to %q: two tokens for one string", tok, dec, encodeToken(dec))
		}
	}
	for _, tok := range []string{"a.b", "_4", "_2a", "_41", "_2E", "a*", "ü"} {
		if _, err := decodeToken(tok); err == nil {
			t.Errorf("decodeToken(%q) accepted a token encodeToken never makes", tok)
		}
	}
}

func TestOverlongKeyIsRefused(t *testing.T) {
	long := strings.Repeat("ü", maxKeyBytes)
	if _, err := subject(Key{"pods", "default", long}); err == nil {
		t.Error("subject of an overlong name: no error")
	}
	if _, err := filter("pods", long); err == nil {
		t.Error("filter of an overlong namespace: no error")
	}
}

// FuzzKeyEncoding: every key round-trips through its KV key, which NATS
// accepts; a filter is valid and matches only its namespace; and a
// token decodes only if it is the encoding of what it decodes to.
func FuzzKeyEncoding(f *testing.F) {
	for _, s := range attackNames {
		f.Add("pods", s, s)
	}
	f.Add("configmaps", "default", "kube-root-ca.crt")
	f.Add("nodes", "", "n1")
	f.Add("pods", "_5F", "_")
	f.Fuzz(func(t *testing.T, resource, namespace, name string) {
		k := Key{resource, namespace, name}
		subj, err := subject(k)
		if err != nil {
			if len(encodeToken(resource))+len(encodeToken(namespace))+len(encodeToken(name))+2 <= maxKeyBytes {
				t.Fatalf("subject(%v): %v", k, err)
			}
			return
		}
		if !kvKeyValid(subj, kvKeyRe) {
			t.Fatalf("subject(%v) = %q: not a valid KV key", k, subj)
		}
		if back, ok := parseSubject(subj); !ok || back != k {
			t.Fatalf("parseSubject(subject(%v) = %q) = %v, %v", k, subj, back, ok)
		}
		if f, err := filter(resource, namespace); err == nil {
			if !kvKeyValid(f, kvFilterRe) {
				t.Fatalf("filter(%q, %q) = %q: not a valid KV filter", resource, namespace, f)
			}
			if namespace != "" && strings.ContainsAny(strings.TrimSuffix(f, ".*"), "*>") {
				t.Fatalf("filter(%q, %q) = %q: a wildcard before the name", resource, namespace, f)
			}
		}
		// Any string offered as a token decodes only if canonical.
		if dec, err := decodeToken(name); err == nil && encodeToken(dec) != name {
			t.Fatalf("decodeToken(%q) = %q, which encodes to %q", name, dec, encodeToken(dec))
		}
	})
}
