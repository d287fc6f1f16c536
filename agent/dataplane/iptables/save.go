package iptables

import (
	"slices"
	"strings"
)

// savedTables splits iptables-save output by table: table → lines
// (chain declarations and rules, without the *table and COMMIT lines).
func savedTables(out []byte) map[string][]string {
	tables := map[string][]string{}
	table := ""
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '*':
			table = line[1:]
			if _, ok := tables[table]; !ok {
				tables[table] = nil
			}
		case line == "COMMIT":
			table = ""
		case table != "":
			tables[table] = append(tables[table], line)
		}
	}
	return tables
}

// savedChains lists the chains declared in iptables-save output of one table.
func savedChains(out []byte) []string {
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, ":") {
			if name, _, ok := strings.Cut(line[1:], " "); ok {
				chains = append(chains, name)
			}
		}
	}
	return chains
}

// savedRule is one "-A" line of iptables-save output.
type savedRule struct {
	chain string
	spec  string            // everything after "-A chain ", as iptables-save printed it
	flags map[string]string // option → value; "" for options without one; negated options as "!opt"
}

// parseRule parses "-A CHAIN ..." into its chain and options; ok is false
// for other lines.
func parseRule(line string) (savedRule, bool) {
	if !strings.HasPrefix(line, "-A ") {
		return savedRule{}, false
	}
	words := splitWords(line[3:])
	if len(words) == 0 {
		return savedRule{}, false
	}
	r := savedRule{chain: words[0], flags: map[string]string{}}
	_, r.spec, _ = strings.Cut(line[3:], " ")
	negate := false
	for i := 1; i < len(words); i++ {
		w := words[i]
		if w == "!" {
			negate = true
			continue
		}
		if !strings.HasPrefix(w, "-") {
			continue
		}
		value := ""
		if i+1 < len(words) && words[i+1] != "!" && !strings.HasPrefix(words[i+1], "-") {
			value = words[i+1]
			i++
		}
		if negate {
			w = "!" + w
			negate = false
		}
		if w == "-m" {
			continue // module names carry nothing the options do not
		}
		r.flags[w] = value
	}
	return r, true
}

// splitWords splits an iptables-save line into words, keeping a quoted
// string (a comment) as one word without its quotes.
func splitWords(s string) []string {
	var words []string
	var b strings.Builder
	inQuote, inWord := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case ch == '"':
			inQuote = !inQuote
			inWord = true
		case ch == ' ' && !inQuote:
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words
}

func sortStrings(s []string) { slices.Sort(s) }
