package proxier

import (
	"fmt"
	"strings"
)

// LinesAround returns lines n-context..n+context (1-based) of data, the
// part of a payload that iptables-restore or nft refused, numbered. Lines
// longer than maxLen (0: no bound) are cut, as an nft element list can be
// megabytes long.
func LinesAround(data []byte, n, context, maxLen int) string {
	lines := strings.Split(string(data), "\n")
	var b strings.Builder
	for i := max(1, n-context); i <= min(len(lines), n+context); i++ {
		l := lines[i-1]
		if maxLen > 0 && len(l) > maxLen {
			l = l[:maxLen] + "..."
		}
		fmt.Fprintf(&b, "%6d  %s\n", i, l)
	}
	return b.String()
}
