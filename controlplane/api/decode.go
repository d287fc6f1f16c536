package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// typeMeta is what a document must say before it can be decoded.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Decode reads one JSON or YAML document into a new object of the kind it
// names. Unknown and duplicate fields are errors naming their path
// (spec.volumns), as a Kubernetes API server with strict field validation
// reports them; they come back as field.ErrorList so the caller can add the
// validation errors of the same object to them.
func Decode(doc []byte) (*Resource, Object, error) {
	data, err := toJSON(doc)
	if err != nil {
		return nil, nil, err
	}
	var tm typeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return nil, nil, fmt.Errorf("read apiVersion and kind: %w", err)
	}
	if tm.Kind == "" {
		return nil, nil, errors.New("field kind is required: every document must say what it is (kind: Pod, Service, Deployment, ...)")
	}
	if tm.APIVersion == "" {
		return nil, nil, fmt.Errorf("field apiVersion is required for kind %s", tm.Kind)
	}
	r, err := ForKind(tm.APIVersion, tm.Kind)
	if err != nil {
		return nil, nil, err
	}
	obj, err := DecodeInto(r, data)
	return r, obj, err
}

// DecodeInto decodes a JSON or YAML document as an object of resource r.
// When the document has unknown fields, the object is still returned
// (decoded without them) together with a field.ErrorList naming them.
func DecodeInto(r *Resource, doc []byte) (Object, error) {
	data, err := toJSON(doc)
	if err != nil {
		return nil, err
	}
	var tm typeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return nil, fmt.Errorf("decode %s: %w", r.Kind, err)
	}
	// A body names what it is, or leaves it to the URL; it never says it
	// is something else than what the URL says it creates.
	if tm.Kind != "" && tm.Kind != r.Kind {
		return nil, fmt.Errorf("the body is a %s (kind: %s), but %s hold %s objects", tm.Kind, tm.Kind, r.Name, r.Kind)
	}
	if tm.APIVersion != "" && tm.APIVersion != r.APIVersion() {
		return nil, fmt.Errorf("the body's apiVersion is %s, but %s are served as %s", tm.APIVersion, r.Name, r.APIVersion())
	}
	obj := r.New()
	strict, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", r.Kind, err)
	}
	SetTypeMeta(r, obj)
	if len(strict) > 0 {
		var errs field.ErrorList
		for _, e := range strict {
			errs = append(errs, strictFieldError(e))
		}
		return obj, errs.ToAggregate()
	}
	return obj, nil
}

// strictFieldError turns `unknown field "spec.volumns"` into a field error on
// spec.volumns.
func strictFieldError(err error) *field.Error {
	msg := err.Error()
	for _, prefix := range []string{"unknown field ", "duplicate field "} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			path := strings.Trim(rest, `"`)
			return field.Forbidden(field.NewPath(path), strings.TrimSpace(prefix)+"; check its spelling and indentation")
		}
	}
	return field.Invalid(field.NewPath(""), "", msg)
}

func toJSON(doc []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return trimmed, nil
	}
	if err := checkYAMLExpansion(doc, MaxDocumentBytes); err != nil {
		return nil, err
	}
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	return data, nil
}

// SplitDocuments splits a YAML stream on `---` lines, dropping documents that
// hold only comments or whitespace. Each document keeps its 1-based index in
// the stream, for error messages.
func SplitDocuments(r io.Reader) ([]Document, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var docs []Document
	var cur bytes.Buffer
	index := 1
	flush := func() {
		if !isBlankYAML(cur.Bytes()) {
			docs = append(docs, Document{Index: index, Data: bytes.Clone(cur.Bytes())})
		}
		index++
		cur.Reset()
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs, nil
}

// Document is one YAML document of a stream.
type Document struct {
	Index int // 1-based position in the stream
	Data  []byte
}

func isBlankYAML(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}

// ToJSON converts a YAML or JSON document to JSON, unknown fields and all.
func ToJSON(doc []byte) ([]byte, error) { return toJSON(doc) }
