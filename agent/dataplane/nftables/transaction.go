package nftables

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
)

// state is what the table carries after the last successful write, as far
// as this proxier wrote it: each service port's chains, sets and elements,
// and who owns each element (a ClusterIP in @cluster-ips belongs to every
// port of its Service). A partial sync diffs a changed service against it
// and writes only the difference.
type state struct {
	services map[dataplane.ServiceKey]*written
	elements map[elemID]*elemState
	// staleChains were flushed at the given time and are deleted a second
	// later: before Linux 6.2 a chain that a map element pointed at stays
	// referenced for a short while after the element goes, and deleting it
	// in the same transaction fails (kube-proxy does the same).
	staleChains map[string]time.Time
	// contested are elements a service port wanted and did not get,
	// because another had them with another verdict. When the holder
	// lets go, a full sync hands them to the next in name order.
	contested map[elemID]bool
	// baseChainsMade: this proxier has written the base chains once.
	// Before that, a full sync deletes and makes them again, in case an
	// earlier version of skep made them with other hooks or priorities,
	// which nft cannot change in place (kube-proxy does the same).
	baseChainsMade bool
}

// written is what one service port put in the table.
type written struct {
	chains []string
	sets   map[string]time.Duration
	elems  []elemID
}

// elemState is one element in the table and the service ports that want it.
type elemState struct {
	value, comment string
	// owners is a slice, not a set: nearly every element has one owner (a
	// ClusterIP one per port of its Service), and at 30,000 services a map
	// per element would be most of the proxier's heap.
	owners []dataplane.ServiceKey
}

func newState() *state {
	return &state{
		services:    map[dataplane.ServiceKey]*written{},
		elements:    map[elemID]*elemState{},
		staleChains: map[string]time.Time{},
		contested:   map[elemID]bool{},
	}
}

// leftovers is what a full sync found in the table before writing: the
// per-service chains and affinity sets (with their timeouts), whoever made
// them. Those not wanted any more go.
type leftovers struct {
	chains []string
	sets   map[string]time.Duration
}

// transaction collects one `nft -f` input in the order the kernel needs it:
// the table and fixed objects, element deletions, chains declared and
// flushed, set deletions and additions, rules, element additions.
type transaction struct {
	table                           string
	head, chains, setDels, setAdds  strings.Builder
	rules                           strings.Builder
	elemDels, elemAdds              []element
	conflicts                       []elemID // elements two service ports want with different verdicts
	wroteChains, flushedStaleChains int
	// wantFullSync: the transaction deletes a contested element, which
	// only a full sync can give to the service port that waits for it.
	wantFullSync bool
}

func (tx *transaction) line(b *strings.Builder, words ...string) {
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	b.WriteByte('\n')
}

// declareChain creates a chain if it is missing and empties it.
func (tx *transaction) declareChain(name string) {
	tx.line(&tx.chains, "add chain ip", tx.table, name)
	tx.line(&tx.chains, "flush chain ip", tx.table, name)
}

func (tx *transaction) writeRules(c chainRules) {
	for _, r := range c.rules {
		tx.line(&tx.rules, "add rule ip", tx.table, c.name, r)
	}
}

func (tx *transaction) addSet(name string, timeout time.Duration) {
	// "dynamic" because the kernel adds it to a set that rules update, and
	// an add that differs from what the kernel holds would be refused.
	tx.line(&tx.setAdds, "add set ip", tx.table, name, "{ type ipv4_addr ; flags dynamic,timeout ; timeout",
		strconv.Itoa(int(timeout.Seconds()))+"s ; }")
}

// bytes is the transaction's nft input.
func (tx *transaction) bytes() []byte {
	var b strings.Builder
	b.WriteString(tx.head.String())
	tx.writeElements(&b, "delete", tx.elemDels)
	b.WriteString(tx.chains.String())
	b.WriteString(tx.setDels.String())
	b.WriteString(tx.setAdds.String())
	b.WriteString(tx.rules.String())
	tx.writeElements(&b, "add", tx.elemAdds)
	return []byte(b.String())
}

// writeElements writes one statement per map or set, elements in order.
func (tx *transaction) writeElements(b *strings.Builder, verb string, elems []element) {
	slices.SortFunc(elems, func(a, b element) int {
		return cmp.Or(cmp.Compare(a.container, b.container), cmp.Compare(a.key, b.key))
	})
	for i := 0; i < len(elems); {
		j := i
		for j < len(elems) && elems[j].container == elems[i].container {
			j++
		}
		items := make([]string, 0, j-i)
		for _, e := range elems[i:j] {
			item := e.key
			if verb == "add" {
				if e.comment != "" {
					item += " comment " + strconv.Quote(e.comment)
				}
				if e.value != "" {
					item += " : " + e.value
				}
			}
			items = append(items, item)
		}
		tx.line(b, verb, "element ip", tx.table, elems[i].container, "{", strings.Join(items, ", "), "}")
		i = j
	}
}

// writeHead creates the table and its fixed chains, maps and sets, and
// empties them (affinity sets are not among them: they keep their
// clients). remakeBase deletes the base chains before making them.
func (l *layout) writeHead(tx *transaction, remakeBase bool) {
	h := &tx.head
	tx.line(h, "add table ip", l.table, `{ comment "rules for kube-proxy" ; }`)
	for _, c := range containers {
		tx.line(h, "add", c.kind, "ip", l.table, c.name, "{", c.spec, "}")
		if c.name == nodePortIPsSet && len(l.nodeIPs) == 0 {
			// Add, then delete: a delete alone fails when it is missing.
			tx.line(h, "delete set ip", l.table, c.name)
			continue
		}
		tx.line(h, "flush", c.kind, "ip", l.table, c.name)
	}
	for _, c := range baseChains {
		if remakeBase {
			tx.line(h, "add chain ip", l.table, c.name)
			tx.line(h, "flush chain ip", l.table, c.name)
			tx.line(h, "delete chain ip", l.table, c.name)
		}
		tx.line(h, "add chain ip", l.table, c.name, "{ type", c.kind, "hook", c.hook, "priority", strconv.Itoa(c.priority), "; }")
		tx.line(h, "flush chain ip", l.table, c.name)
	}
	for _, name := range fixedChains {
		tx.line(h, "add chain ip", l.table, name)
		tx.line(h, "flush chain ip", l.table, name)
	}
	for _, j := range jumps {
		rule := "jump " + j.to
		if j.match != "" {
			rule = j.match + " " + rule
		}
		tx.line(h, "add rule ip", l.table, j.from, rule)
	}
	for _, c := range l.fixedRules() {
		for _, r := range c.rules {
			tx.line(h, "add rule ip", l.table, c.name, r)
		}
	}
	if len(l.nodeIPs) > 0 {
		ips := make([]string, len(l.nodeIPs))
		for i, ip := range l.nodeIPs {
			ips[i] = ip.String()
		}
		tx.line(h, "add element ip", l.table, nodePortIPsSet, "{", strings.Join(ips, ", "), "}")
	}
}

// fullSync writes the whole table: the fixed part, every service port's
// chains and elements into emptied maps, in one transaction, so the table
// changes at once. Per-service chains and affinity sets found in the table
// that the services no longer use are flushed (the chains deleted later)
// and deleted. Only what was found is touched: after a failed write the
// old state may name chains that never came to be.
func (l *layout) fullSync(old *state, services map[dataplane.ServiceKey]*dataplane.Service, found leftovers, now time.Time) (*transaction, *state) {
	tx := &transaction{table: l.table}
	st := newState()
	l.writeHead(tx, !old.baseChainsMade)
	st.baseChainsMade = true

	active := map[string]bool{}
	for _, k := range sortedKeys(services) {
		r := l.serviceRules(services[k])
		st.claim(tx, k, r, nil)
		for _, c := range r.chains {
			active[c.name] = true
		}
	}
	for _, name := range slices.Sorted(slices.Values(found.chains)) {
		if active[name] {
			continue
		}
		tx.line(&tx.chains, "flush chain ip", l.table, name)
		st.staleChains[name] = now
		if at, ok := old.staleChains[name]; ok {
			st.staleChains[name] = at // flushed before: its second may be up
		}
		tx.flushedStaleChains++
	}
	wantSets := map[string]time.Duration{}
	for _, w := range st.services {
		maps.Copy(wantSets, w.sets)
	}
	for _, name := range slices.Sorted(maps.Keys(found.sets)) {
		if want, ok := wantSets[name]; !ok || want != found.sets[name] {
			tx.line(&tx.setDels, "delete set ip", l.table, name)
		}
	}
	return tx, st
}

// partialSync writes what the changed service ports change: their
// elements (added, deleted, or replaced when the verdict changed), their
// chains (rewritten; the ones no longer used flushed, deleted later) and
// their affinity sets. st is updated in place; after a failed write only a
// full sync can say what the table holds.
func (l *layout) partialSync(st *state, changed map[dataplane.ServiceKey]*dataplane.Service, now time.Time) *transaction {
	tx := &transaction{table: l.table}
	keys := sortedKeys(changed)
	// Releases first, so that an element one service port gives up and
	// another takes (a ClusterIP reused within one sync) is handed over.
	released := map[elemID]bool{}
	olds := make(map[dataplane.ServiceKey]*written, len(keys))
	for _, k := range keys {
		olds[k] = st.release(k, released)
	}
	for _, k := range keys {
		var r serviceRules
		if s := changed[k]; s != nil {
			r = l.serviceRules(s)
			st.claim(tx, k, r, released)
		}
		l.retireOld(tx, st, olds[k], r, now)
	}
	for _, id := range sortedIDs(released) {
		forced := released[id]
		es := st.elements[id]
		if forced || es == nil || len(es.owners) == 0 {
			tx.elemDels = append(tx.elemDels, element{container: id.container, key: id.key})
			tx.wantFullSync = tx.wantFullSync || st.contested[id]
		}
		if !forced && es != nil && len(es.owners) == 0 {
			delete(st.elements, id)
		}
	}
	return tx
}

// retireOld flushes the chains and deletes the sets of a service port's
// old state that its new rules r do not have (or have with another
// timeout, which nft cannot change in place everywhere).
func (l *layout) retireOld(tx *transaction, st *state, old *written, r serviceRules, now time.Time) {
	if old == nil {
		return
	}
	keep := map[string]bool{}
	for _, c := range r.chains {
		keep[c.name] = true
	}
	for _, name := range old.chains {
		if !keep[name] {
			tx.line(&tx.chains, "flush chain ip", l.table, name)
			st.staleChains[name] = now
			tx.flushedStaleChains++
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old.sets)) {
		if want, ok := r.sets[name]; !ok || want != old.sets[name] {
			tx.line(&tx.setDels, "delete set ip", l.table, name)
		}
	}
}

// release takes service port k out of the state, marking in released the
// elements it alone owned (false: to delete unless someone takes them
// back). It returns what k had written.
func (st *state) release(k dataplane.ServiceKey, released map[elemID]bool) *written {
	w := st.services[k]
	if w == nil {
		return nil
	}
	delete(st.services, k)
	for _, id := range w.elems {
		es := st.elements[id]
		if es == nil {
			continue
		}
		es.owners = slices.DeleteFunc(es.owners, func(o dataplane.ServiceKey) bool { return o == k })
		if len(es.owners) == 0 {
			released[id] = false
		}
	}
	return w
}

// claim writes service port k's rules r into tx and records them in the
// state: every chain declared and filled, every set added, and each
// element added unless it is already there with the same verdict.
func (st *state) claim(tx *transaction, k dataplane.ServiceKey, r serviceRules, released map[elemID]bool) {
	w := &written{sets: r.sets}
	for _, c := range r.chains {
		tx.declareChain(c.name)
		tx.writeRules(c)
		w.chains = append(w.chains, c.name)
		delete(st.staleChains, c.name)
		tx.wroteChains++
	}
	for _, name := range slices.Sorted(maps.Keys(r.sets)) {
		tx.addSet(name, r.sets[name])
	}
	for _, e := range r.elements {
		id := e.id()
		es := st.elements[id]
		switch {
		case es == nil:
		case es.value == e.value && es.comment == e.comment:
			if !slices.Contains(es.owners, k) {
				es.owners = append(es.owners, k)
			}
			w.elems = append(w.elems, id)
			continue
		case len(es.owners) == 0 && released != nil:
			// Given up in this sync with another verdict: the old one is
			// deleted before the new one is added.
			released[id] = true
		default:
			tx.conflicts = append(tx.conflicts, id)
			st.contested[id] = true
			// A partial sync leaves the element with its owner; a full
			// one gives it to the first in name order, which k may be.
			if released != nil && slices.ContainsFunc(es.owners, func(o dataplane.ServiceKey) bool { return compareKeys(k, o) < 0 }) {
				tx.wantFullSync = true
			}
			continue
		}
		st.elements[id] = &elemState{value: e.value, comment: e.comment, owners: []dataplane.ServiceKey{k}}
		tx.elemAdds = append(tx.elemAdds, e)
		w.elems = append(w.elems, id)
	}
	st.services[k] = w
}

// dueStaleChains are the stale chains flushed before cutoff, in order.
func (st *state) dueStaleChains(cutoff time.Time) []string {
	var out []string
	for name, at := range st.staleChains {
		if !at.After(cutoff) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// sortedKeys orders service ports by namespace, name, port name, protocol,
// so that equal input gives an equal transaction.
func sortedKeys[V any](services map[dataplane.ServiceKey]V) []dataplane.ServiceKey {
	keys := slices.Collect(maps.Keys(services))
	slices.SortFunc(keys, compareKeys)
	return keys
}

func compareKeys(a, b dataplane.ServiceKey) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
}

func sortedIDs(m map[elemID]bool) []elemID {
	ids := slices.Collect(maps.Keys(m))
	slices.SortFunc(ids, func(a, b elemID) int {
		return cmp.Or(cmp.Compare(a.container, b.container), cmp.Compare(a.key, b.key))
	})
	return ids
}
