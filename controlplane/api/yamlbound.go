package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	yamlv3 "go.yaml.in/yaml/v3"
)

// MaxDocumentBytes bounds what one document may expand to when decoded:
// Kubernetes' request body limit. A YAML alias repeats its anchor's whole
// value, so a small document can stand for a huge one ("billion laughs"):
// 300 aliases of a 1 MB string are 300 MB once converted to JSON.
const MaxDocumentBytes = 3 << 20

// ErrTooLarge is returned for a document whose expansion is over
// MaxDocumentBytes.
var ErrTooLarge = errors.New("too large")

// checkYAMLExpansion parses doc without expanding aliases and adds up the
// size every value will have once each alias is replaced by its anchor's
// value. It costs one pass over the parsed nodes (an anchor's size is
// counted once and reused), so the check itself cannot be amplified.
func checkYAMLExpansion(doc []byte, limit int) error {
	dec := yamlv3.NewDecoder(bytes.NewReader(doc))
	sizes := map[*yamlv3.Node]int{}
	total := 0
	for {
		var root yamlv3.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// Refused, not left to the converter: it reads only the
			// first document, which may be a bomb that this parser
			// never measured because a later one is broken.
			return fmt.Errorf("parse YAML: %w", err)
		}
		total += expandedSize(&root, sizes, limit)
		if total > limit {
			return fmt.Errorf("%w: the YAML expands to more than %d bytes (its aliases repeat large values); the limit is %d", ErrTooLarge, limit, limit)
		}
	}
}

// expandedSize is the size of n with aliases replaced, stopping early once
// it passes limit. sizes memoizes nodes already measured; a node being
// measured is marked -1 so that a cycle counts as over the limit.
func expandedSize(n *yamlv3.Node, sizes map[*yamlv3.Node]int, limit int) int {
	if s, ok := sizes[n]; ok {
		if s < 0 {
			return limit + 1
		}
		return s
	}
	sizes[n] = -1
	size := len(n.Value) + 1
	if n.Kind == yamlv3.AliasNode && n.Alias != nil {
		size = expandedSize(n.Alias, sizes, limit)
	}
	for _, c := range n.Content {
		size += expandedSize(c, sizes, limit)
		if size > limit {
			break
		}
	}
	sizes[n] = size
	return size
}

// CheckYAMLExpansion refuses a YAML document (or stream of them) that
// expands past MaxDocumentBytes, or that does not parse, before anything
// converts it: the API server checks a YAML body with it before the
// generic server's decoder, which would expand the aliases, sees it.
func CheckYAMLExpansion(doc []byte) error {
	return checkYAMLExpansion(doc, MaxDocumentBytes)
}
