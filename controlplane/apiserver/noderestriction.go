package apiserver

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
)

// nodeRestriction is what Kubernetes' NodeRestriction admission refuses a
// node writing its own Node: a pod CIDR (the control plane assigns it,
// and other nodes route that range to the node), and labels a node may not
// give itself. It returns why, or "".
func nodeRestriction(req request) string {
	n, _ := req.new.(*corev1.Node)
	if n == nil || req.status {
		return "" // a status write keeps the stored spec and labels
	}
	old, _ := req.old.(*corev1.Node)
	// A write from an older copy is checked against the stored object
	// too (and refused when it differs): its resourceVersion may yet be
	// the stored one when the write lands.
	if old == nil {
		old = &corev1.Node{}
	}
	if n.Spec.PodCIDR != old.Spec.PodCIDR || !slices.Equal(n.Spec.PodCIDRs, old.Spec.PodCIDRs) {
		return "spec.podCIDR and spec.podCIDRs are set by the control plane only"
	}
	var refused []string
	for k := range modifiedLabels(n.Labels, old.Labels) {
		if restrictedNodeLabel(k) {
			refused = append(refused, k)
		}
	}
	if len(refused) > 0 {
		sort.Strings(refused)
		return fmt.Sprintf("a node may not set the labels %s: only the labels %s, and those under kubelet.kubernetes.io/ and node.kubernetes.io/, of the kubernetes.io and k8s.io namespaces; none of node-restriction.kubernetes.io/",
			strings.Join(refused, ", "), strings.Join(sets.List(kubeletLabels), ", "))
	}
	return ""
}

// modifiedLabels are the keys added, changed or removed: a node may keep
// a restricted label the admin set, but not touch it.
func modifiedLabels(cur, old map[string]string) sets.Set[string] {
	out := sets.New[string]()
	for k, v := range cur {
		if ov, ok := old[k]; !ok || ov != v {
			out.Insert(k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			out.Insert(k)
		}
	}
	return out
}

// kubeletLabels are the labels of the kubernetes.io namespace a kubelet
// may set on its Node (Kubernetes' kubelet label policy).
var kubeletLabels = sets.New(
	corev1.LabelHostname, corev1.LabelArchStable, corev1.LabelOSStable,
	"beta.kubernetes.io/arch", "beta.kubernetes.io/os",
	corev1.LabelInstanceType, corev1.LabelInstanceTypeStable,
	corev1.LabelFailureDomainBetaRegion, corev1.LabelFailureDomainBetaZone,
	corev1.LabelTopologyRegion, corev1.LabelTopologyZone,
)

// restrictedNodeLabel says whether a node may not set key on itself.
func restrictedNodeLabel(key string) bool {
	domain, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	under := func(d string) bool { return domain == d || strings.HasSuffix(domain, "."+d) }
	switch {
	case under("node-restriction.kubernetes.io"):
		return true
	case !under("kubernetes.io") && !under("k8s.io"):
		return false
	case kubeletLabels.Has(key), under("kubelet.kubernetes.io"), under("node.kubernetes.io"):
		return false
	}
	return true
}
