package store

import (
	"errors"
	"fmt"
	"strings"
)

// A KV key is "resource.namespace.name", each part encoded by encodeToken
// so that any string becomes one subject token and distinct strings
// distinct tokens. A JetStream KV key allows only [-/_=.a-zA-Z0-9], and
// '.' separates subject tokens, so a raw name could hold no dot, no
// space, no non-ASCII byte, and a name "*" or ">" would be a wildcard in a
// list's filter.
//
// The encoding keeps what keys looked like before it existed, so data
// written then still reads: the letters, digits and '-' stand for
// themselves, and '.' (which Kubernetes names hold) becomes '='. Every
// other byte, '=' and '_' included, becomes '_' and two upper-case hex
// digits. The empty string, which is the namespace of cluster-scoped
// objects, is "_" alone: no other string encodes to it, since an escape
// is always three bytes, so a namespace literally named "_" ("_5F") is
// not taken for cluster scope.

const (
	escape     = '_'
	dotStandIn = '='
	// emptyToken is the encoding of "": a token cannot be empty.
	emptyToken = "_"
	hexDigits  = "0123456789ABCDEF"
)

// maxKeyBytes bounds an encoded key. The key travels in a subject in the
// first line of a NATS protocol message, and a line longer than the
// server's max_control_line (4 KiB by default) makes it close the
// connection. The longest key the API can produce (a 253-byte name and a
// 63-byte namespace, every byte escaped) is under 1 KiB.
const maxKeyBytes = 2048

// errKeyTooLong is why a longer key is refused.
var errKeyTooLong = fmt.Errorf("key longer than %d bytes once encoded", maxKeyBytes)

// literal says whether b stands for itself in a token.
func literal(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-'
}

// encodeToken turns any string into one non-empty subject token made of
// KV-key characters other than '.'; decodeToken is its inverse.
func encodeToken(s string) string {
	if s == "" {
		return emptyToken
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case literal(c):
			b.WriteByte(c)
		case c == '.':
			b.WriteByte(dotStandIn)
		default:
			b.WriteByte(escape)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
	}
	return b.String()
}

// decodeToken reverses encodeToken. It accepts only what encodeToken
// produces, so every stored key decodes to exactly one string.
func decodeToken(t string) (string, error) {
	if t == emptyToken {
		return "", nil
	}
	if t == "" {
		return "", errors.New("empty token")
	}
	var b strings.Builder
	b.Grow(len(t))
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case literal(c):
			b.WriteByte(c)
		case c == dotStandIn:
			b.WriteByte('.')
		case c == escape:
			if i+2 >= len(t) {
				return "", fmt.Errorf("token %q: escape at byte %d not followed by two hex digits", t, i)
			}
			hi, lo := strings.IndexByte(hexDigits, t[i+1]), strings.IndexByte(hexDigits, t[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("token %q: escape at byte %d not followed by two upper-case hex digits", t, i)
			}
			d := byte(hi<<4 | lo)
			if literal(d) || d == '.' {
				return "", fmt.Errorf("token %q: byte %q escaped, which is written as itself", t, d)
			}
			b.WriteByte(d)
			i += 2
		default:
			return "", fmt.Errorf("token %q: byte %q is not part of an encoding", t, c)
		}
	}
	return b.String(), nil
}

// subject is the KV key of k.
func subject(k Key) (string, error) {
	s := encodeToken(k.Resource) + "." + encodeToken(k.Namespace) + "." + encodeToken(k.Name)
	if len(s) > maxKeyBytes {
		return "", fmt.Errorf("%s: %w", k, errKeyTooLong)
	}
	return s, nil
}

// parseSubject reverses subject; false for a key it did not make.
func parseSubject(s string) (Key, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Key{}, false
	}
	var k Key
	for i, dst := range []*string{&k.Resource, &k.Namespace, &k.Name} {
		v, err := decodeToken(parts[i])
		if err != nil {
			return Key{}, false
		}
		*dst = v
	}
	return k, true
}

// filter is the subject filter of a resource in a namespace ("" for
// all). The tokens are encoded, so neither can be a wildcard.
func filter(resource, namespace string) (string, error) {
	f := encodeToken(resource) + ".>"
	if namespace != "" {
		f = encodeToken(resource) + "." + encodeToken(namespace) + ".*"
	}
	if len(f) > maxKeyBytes {
		return "", fmt.Errorf("%s in namespace %q: %w", resource, namespace, errKeyTooLong)
	}
	return f, nil
}
