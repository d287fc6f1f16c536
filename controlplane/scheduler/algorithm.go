package scheduler

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The reasons a node is filtered out, worded as Kubernetes words them in a
// FailedScheduling message.
const (
	reasonNotReady      = "node(s) were not ready"
	reasonUnschedulable = "node(s) were unschedulable"
	reasonSelector      = "node(s) didn't match node selector"
	reasonCPU           = "Insufficient cpu"
	reasonMemory        = "Insufficient memory"
	reasonPods          = "Too many pods"
)

// FitError says why a pod fits no node.
type FitError struct {
	Nodes   int
	Reasons map[string]int // reason -> number of nodes
}

// Error is Kubernetes' message: "0/3 nodes are available: 2 Insufficient
// memory, 1 node(s) didn't match node selector." The most common reasons
// come first.
func (e *FitError) Error() string {
	if e.Nodes == 0 {
		return "0/0 nodes are available: no nodes available to schedule pods."
	}
	type count struct {
		reason string
		n      int
	}
	var cs []count
	for r, n := range e.Reasons {
		cs = append(cs, count{r, n})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].n != cs[j].n {
			return cs[i].n > cs[j].n
		}
		return cs[i].reason < cs[j].reason
	})
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%d %s", c.n, c.reason)
	}
	return fmt.Sprintf("0/%d nodes are available: %s.", e.Nodes, strings.Join(parts, ", "))
}

// filter returns the reasons the pod cannot go to n, none if it can. Like
// Kubernetes, node state is checked first and stops the checks; resource
// shortages are all reported.
func filter(n *nodeInfo, pod *corev1.Pod, req request, reasons []string) []string {
	switch {
	case !n.ready:
		return append(reasons, reasonNotReady)
	case !n.schedulable:
		return append(reasons, reasonUnschedulable)
	}
	for k, v := range pod.Spec.NodeSelector {
		if n.node.Labels[k] != v {
			return append(reasons, reasonSelector)
		}
	}
	if n.pods+1 > n.allocPods {
		reasons = append(reasons, reasonPods)
	}
	if req.milliCPU > 0 && n.requested.milliCPU+req.milliCPU > n.allocMilliCPU {
		reasons = append(reasons, reasonCPU)
	}
	if req.memory > 0 && n.requested.memory+req.memory > n.allocMemory {
		reasons = append(reasons, reasonMemory)
	}
	return reasons
}

const maxScore = 100

// leastAllocated scores a node by the share of cpu and memory left free
// once the pod is there: emptier nodes score higher.
func leastAllocated(n *nodeInfo, req request) int64 {
	free := func(requested, capacity int64) int64 {
		if capacity <= 0 || requested > capacity {
			return 0
		}
		return (capacity - requested) * maxScore / capacity
	}
	cpu := free(n.requested.nonZeroMilliCPU+req.nonZeroMilliCPU, n.allocMilliCPU)
	mem := free(n.requested.nonZeroMemory+req.nonZeroMemory, n.allocMemory)
	return (cpu + mem) / 2
}

// spreadWeight makes spreading replicas outweigh small differences in load.
const spreadWeight = 2

// schedule picks a node for the pod among nodes, or says why none fits.
// Ties are broken at random, so replicas spread over equal nodes.
func schedule(nodes []*nodeInfo, pod *corev1.Pod, rng *rand.Rand) (*nodeInfo, request, error) {
	req := podRequest(pod)
	owner := ownerOf(pod)
	feasible := make([]*nodeInfo, 0, len(nodes))
	fit := &FitError{Nodes: len(nodes), Reasons: map[string]int{}}
	var reasons []string
	maxOwned := 0
	for _, n := range nodes {
		reasons = filter(n, pod, req, reasons[:0])
		if len(reasons) > 0 {
			for _, r := range reasons {
				fit.Reasons[r]++
			}
			continue
		}
		feasible = append(feasible, n)
		if owner != "" {
			maxOwned = max(maxOwned, n.owners[owner])
		}
	}
	if len(feasible) == 0 {
		return nil, req, fit
	}
	var best *nodeInfo
	bestScore, ties := int64(-1), 0
	for _, n := range feasible {
		score := leastAllocated(n, req)
		if owner != "" && maxOwned > 0 {
			score += spreadWeight * int64(maxScore*(maxOwned-n.owners[owner])/maxOwned)
		} else {
			score += spreadWeight * maxScore
		}
		switch {
		case score > bestScore:
			best, bestScore, ties = n, score, 1
		case score == bestScore:
			// Reservoir sampling: each tied node is picked with equal chance.
			ties++
			if rng.IntN(ties) == 0 {
				best = n
			}
		}
	}
	return best, req, nil
}
