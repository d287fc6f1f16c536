package scheduler

import (
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/controlplane/api/conditions"
)

// Defaults Kubernetes uses when scoring pods that request nothing, so that
// such pods still spread instead of piling onto one node.
const (
	defaultMilliCPURequest = 100               // 0.1 core
	defaultMemoryRequest   = 200 * 1024 * 1024 // 200 MiB
	defaultMaxPods         = 110
)

// request is what a pod takes from its node.
type request struct {
	milliCPU, memory int64
	// nonZero* are used for scoring only.
	nonZeroMilliCPU, nonZeroMemory int64
}

func (r *request) add(o request, sign int64) {
	r.milliCPU += sign * o.milliCPU
	r.memory += sign * o.memory
	r.nonZeroMilliCPU += sign * o.nonZeroMilliCPU
	r.nonZeroMemory += sign * o.nonZeroMemory
}

// podRequest sums the containers' requests (a request left out but limited
// counts as its limit, as Kubernetes defaults it); init containers run one
// at a time, so only the largest counts, if it is larger.
func podRequest(pod *corev1.Pod) request {
	var r request
	get := func(c *corev1.Container, name corev1.ResourceName) (int64, bool) {
		q, ok := c.Resources.Requests[name]
		if !ok {
			q, ok = c.Resources.Limits[name]
		}
		if !ok {
			return 0, false
		}
		if name == corev1.ResourceCPU {
			return q.MilliValue(), true
		}
		return q.Value(), true
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cpu, okCPU := get(c, corev1.ResourceCPU)
		mem, okMem := get(c, corev1.ResourceMemory)
		r.milliCPU += cpu
		r.memory += mem
		if !okCPU {
			cpu = defaultMilliCPURequest
		}
		if !okMem {
			mem = defaultMemoryRequest
		}
		r.nonZeroMilliCPU += cpu
		r.nonZeroMemory += mem
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if cpu, _ := get(c, corev1.ResourceCPU); cpu > r.milliCPU {
			r.milliCPU = cpu
		}
		if mem, _ := get(c, corev1.ResourceMemory); mem > r.memory {
			r.memory = mem
		}
	}
	return r
}

// ownerOf is the uid of the pod's controller (its ReplicaSet, say): the
// group whose replicas should spread.
func ownerOf(pod *corev1.Pod) types.UID {
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		return ref.UID
	}
	return ""
}

// nodeInfo is a node and what the pods placed on it take.
type nodeInfo struct {
	name string
	node *corev1.Node // nil while pods name a node the cache has not seen

	allocMilliCPU, allocMemory, allocPods int64
	ready, schedulable                    bool

	requested request
	pods      int64
	owners    map[types.UID]int // pods per controller, for spreading
}

func (n *nodeInfo) setNode(node *corev1.Node) {
	n.node = node
	alloc := func(name corev1.ResourceName) (int64, bool) {
		q, ok := node.Status.Allocatable[name]
		if !ok {
			q, ok = node.Status.Capacity[name]
		}
		if !ok {
			return 0, false
		}
		if name == corev1.ResourceCPU {
			return q.MilliValue(), true
		}
		return q.Value(), true
	}
	n.allocMilliCPU, _ = alloc(corev1.ResourceCPU)
	n.allocMemory, _ = alloc(corev1.ResourceMemory)
	var ok bool
	if n.allocPods, ok = alloc(corev1.ResourcePods); !ok {
		n.allocPods = defaultMaxPods
	}
	n.ready = conditions.NodeReady(node)
	n.schedulable = !node.Spec.Unschedulable
}

// placement is where the cache has a pod, and what it takes there.
type placement struct {
	node  string
	req   request
	owner types.UID
}

// cache is the scheduler's view of the cluster: nodes, and the pods on
// them, including pods this scheduler has bound but not yet seen come
// back from a watch ("assumed"), so that decisions made in a row see
// each other.
type cache struct {
	mu     sync.Mutex
	nodes  map[string]*nodeInfo
	sorted []*nodeInfo // nodes with a Node object, by name
	pods   map[string]placement
	// assumed pods are bound by this scheduler and not yet seen bound in
	// a watch event; a stale event showing them pending must not undo that.
	assumed map[string]bool
}

func newCache() *cache {
	return &cache{nodes: map[string]*nodeInfo{}, pods: map[string]placement{}, assumed: map[string]bool{}}
}

func (c *cache) info(name string) *nodeInfo {
	n, ok := c.nodes[name]
	if !ok {
		n = &nodeInfo{name: name, owners: map[types.UID]int{}}
		c.nodes[name] = n
	}
	return n
}

func (c *cache) resort() {
	c.sorted = c.sorted[:0]
	for _, n := range c.nodes {
		if n.node != nil {
			c.sorted = append(c.sorted, n)
		}
	}
	sort.Slice(c.sorted, func(i, j int) bool { return c.sorted[i].name < c.sorted[j].name })
}

// setNode adds or updates a node.
func (c *cache) setNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.info(node.Name)
	isNew := n.node == nil
	n.setNode(node)
	if isNew {
		c.resort()
	}
}

func (c *cache) removeNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return
	}
	n.node = nil
	if n.pods == 0 {
		delete(c.nodes, name)
	}
	c.resort()
}

// occupies reports whether a pod takes resources on its node: bound and
// not finished.
func occupies(pod *corev1.Pod) bool {
	return pod.Spec.NodeName != "" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// setPod records where a pod runs (or that it runs nowhere).
func (c *cache) setPod(key string, pod *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pod.Spec.NodeName == "" && c.assumed[key] {
		return // an event from before our binding
	}
	delete(c.assumed, key)
	if !occupies(pod) {
		c.removeLocked(key)
		return
	}
	c.placeLocked(key, placement{node: pod.Spec.NodeName, req: podRequest(pod), owner: ownerOf(pod)})
}

// assumeLocked places a pod the scheduler has chosen a node for, before
// the binding is written.
func (c *cache) assumeLocked(key string, p placement) {
	c.assumed[key] = true
	c.placeLocked(key, p)
}

// forget undoes assume after a failed binding.
func (c *cache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.assumed[key] {
		delete(c.assumed, key)
		c.removeLocked(key)
	}
}

func (c *cache) isAssumed(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.assumed[key]
}

func (c *cache) placeLocked(key string, p placement) {
	if old, ok := c.pods[key]; ok {
		if old == p {
			return
		}
		c.removeLocked(key)
	}
	c.pods[key] = p
	n := c.info(p.node)
	n.requested.add(p.req, 1)
	n.pods++
	n.owners[p.owner]++
}

func (c *cache) removePod(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.assumed, key)
	c.removeLocked(key)
}

func (c *cache) removeLocked(key string) {
	p, ok := c.pods[key]
	if !ok {
		return
	}
	delete(c.pods, key)
	n := c.nodes[p.node]
	n.requested.add(p.req, -1)
	n.pods--
	if n.owners[p.owner]--; n.owners[p.owner] <= 0 {
		delete(n.owners, p.owner)
	}
	if n.node == nil && n.pods == 0 {
		delete(c.nodes, p.node)
	}
}
