package api

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// aliasBomb is a ConfigMap whose one large value is repeated by aliases:
// small to send, huge once expanded.
func aliasBomb(valueBytes, aliases int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  k0: &v %s\n", strings.Repeat("x", valueBytes))
	for i := 1; i <= aliases; i++ {
		fmt.Fprintf(&b, "  k%d: *v\n", i)
	}
	return b.String()
}

// TestAliasBombRefused: a document whose aliases expand past the limit is
// refused before it is expanded, quickly and with a message naming the
// limit; nested aliases (an anchor of aliases) are counted too.
func TestAliasBombRefused(t *testing.T) {
	nested := "a: &a [" + strings.Repeat(`"xxxxxxxxxx",`, 100) + "x]\n" +
		"b: &b [" + strings.Repeat("*a,", 100) + "*a]\n" +
		"c: &c [" + strings.Repeat("*b,", 100) + "*b]\n" +
		"d: [" + strings.Repeat("*c,", 100) + "*c]\n"
	for name, doc := range map[string]string{
		"1 MB aliased 300 times":  aliasBomb(1<<20, 300),
		"10 bytes, nested 4 deep": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\nx:\n" + indent(nested),
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, _, err := Decode([]byte(doc))
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "3145728") {
				t.Fatalf("decode of %d bytes: %v; want ErrTooLarge naming the limit", len(doc), err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusing took %v", d)
			}
		})
	}
}

// TestAliasBombBehindABrokenDocument: a bomb followed by a document the
// parser cannot read is refused, not handed to the converter, which reads
// only the first document and would expand it (found in review: 12.6 s and
// 1.36 GiB with a node credential).
func TestAliasBombBehindABrokenDocument(t *testing.T) {
	start := time.Now()
	_, _, err := Decode([]byte(aliasBomb(1<<20, 300) + "---\n]\n\tx: [\n"))
	if err == nil || !strings.Contains(err.Error(), "parse YAML") {
		t.Fatalf("bomb + broken document: %v; want a parse error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing took %v", d)
	}
}

// TestAliasesWithinLimitDecode: aliases that stay small still work, as
// they do in Kubernetes.
func TestAliasesWithinLimitDecode(t *testing.T) {
	_, obj, err := Decode([]byte(aliasBomb(100, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(obj.(interface{ GetName() string }).GetName()); got == 0 {
		t.Fatal("no name decoded")
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}
