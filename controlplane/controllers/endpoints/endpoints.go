// Package endpoints keeps, for every Service with a selector, an Endpoints
// object of the same name listing its pods: ready ones under addresses,
// the others (starting, failing their probe, terminating, or on a node
// that is not Ready) under notReadyAddresses, with named targetPorts
// resolved per pod. Pod changes are batched: a burst of them becomes one
// write per Service. Services without a selector keep the Endpoints their
// user wrote.
package endpoints

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/queue"
)

var endpointsResource = api.MustLookup("endpoints")

// Controller writes Endpoints.
type Controller struct {
	c         client.Interface
	services  *client.Informer
	endpoints *client.Informer
	pods      *client.Informer
	nodes     *client.Informer
	batch     time.Duration
	queue     *queue.Queue
	logger    *slog.Logger
}

// New returns the Endpoints controller; pod changes reach the Endpoints
// after at most batch (default 200ms), merged with the changes that came
// meanwhile.
func New(c client.Interface, services, endpoints, pods, nodes *client.Informer, batch time.Duration, logger *slog.Logger) *Controller {
	if batch <= 0 {
		batch = 200 * time.Millisecond
	}
	ec := &Controller{
		c: c, services: services, endpoints: endpoints, pods: pods, nodes: nodes,
		batch: batch, queue: queue.New(), logger: logger.With("controller", "endpoints"),
	}
	enqueue := func(obj api.Object) { ec.queue.Add(client.KeyOf(obj)) }
	services.AddHandlers(client.Handlers{OnAdd: enqueue, OnUpdate: func(_, o api.Object) { enqueue(o) }, OnDelete: enqueue})
	// An Endpoints changed or deleted by someone else is put right.
	endpoints.AddHandlers(client.Handlers{OnUpdate: func(_, o api.Object) { ec.queue.AddAfter(client.KeyOf(o), ec.batch) }, OnDelete: enqueue})
	pods.AddHandlers(client.Handlers{
		OnAdd:    func(o api.Object) { ec.podChanged(nil, o.(*corev1.Pod)) },
		OnUpdate: func(old, o api.Object) { ec.podChanged(old.(*corev1.Pod), o.(*corev1.Pod)) },
		OnDelete: func(o api.Object) { ec.podChanged(nil, o.(*corev1.Pod)) },
	})
	nodes.AddHandlers(client.Handlers{OnUpdate: func(old, o api.Object) {
		// A node that stops (or starts) being Ready moves its pods between
		// addresses and notReadyAddresses at once, without batching.
		if conditions.NodeReady(old.(*corev1.Node)) != conditions.NodeReady(o.(*corev1.Node)) {
			ec.nodeChanged(o.GetName())
		}
	}})
	return ec
}

// Run reconciles until ctx ends.
func (ec *Controller) Run(ctx context.Context, workers int) {
	if !client.WaitForSync(ctx, ec.services, ec.endpoints, ec.pods, ec.nodes) {
		return
	}
	queue.Run(ctx, ec.queue, workers, ec.sync, ec.logger)
}

// ServicesOfPod lists the keys of the Services whose selector matches the
// pod, or matched it before a change of its labels (old may be nil): the
// Services whose endpoints a pod's change can change.
func ServicesOfPod(services *client.Informer, old, pod *corev1.Pod) []string {
	keys := servicesSelecting(services, pod.Namespace, pod.Labels)
	if old != nil && !apiequality.Semantic.DeepEqual(old.Labels, pod.Labels) {
		keys = append(keys, servicesSelecting(services, old.Namespace, old.Labels)...)
	}
	return keys
}

func servicesSelecting(services *client.Informer, ns string, podLabels map[string]string) []string {
	var keys []string
	for _, o := range services.ListNamespace(ns) {
		svc := o.(*corev1.Service)
		if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
			keys = append(keys, client.KeyOf(svc))
		}
	}
	return keys
}

func (ec *Controller) podChanged(old, pod *corev1.Pod) {
	for _, k := range ServicesOfPod(ec.services, old, pod) {
		ec.queue.AddAfter(k, ec.batch)
	}
}

func (ec *Controller) nodeChanged(node string) {
	seen := map[string]bool{}
	for _, o := range ec.pods.List() {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName != node {
			continue
		}
		for _, k := range ServicesOfPod(ec.services, nil, p) {
			if !seen[k] {
				seen[k] = true
				ec.queue.Add(k)
			}
		}
	}
}

func (ec *Controller) sync(ctx context.Context, key string) error {
	ns, name := splitKey(key)
	obj, ok := ec.services.Get(ns, name)
	if !ok {
		// The Service is gone: so are its Endpoints.
		if _, ok := ec.endpoints.Get(ns, name); !ok {
			return nil
		}
		err := ec.c.Delete(ctx, endpointsResource, ns, name, client.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete endpoints %s: %w", key, err)
		}
		return nil
	}
	svc := obj.(*corev1.Service)
	if len(svc.Spec.Selector) == 0 || svc.DeletionTimestamp != nil {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var pods []*corev1.Pod
	for _, o := range ec.pods.ListNamespace(ns) {
		if p := o.(*corev1.Pod); sel.Matches(labels.Set(p.Labels)) {
			pods = append(pods, p)
		}
	}
	subsets := Subsets(svc, pods, ec.nodeReady)
	cur, exists := ec.endpoints.Get(ns, name)
	if exists {
		//lint:ignore SA1019 mirrored for old clients
		ep := cur.(*corev1.Endpoints)
		if apiequality.Semantic.DeepEqual(ep.Subsets, subsets) && apiequality.Semantic.DeepEqual(ep.Labels, svc.Labels) {
			return nil
		}
		next := ep.DeepCopy()
		next.Labels, next.Subsets = svc.Labels, subsets
		if _, err := ec.c.Update(ctx, endpointsResource, next); err != nil {
			return fmt.Errorf("update endpoints %s: %w", key, err)
		}
		return nil
	}
	//lint:ignore SA1019 mirrored for old clients
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: svc.Labels}, Subsets: subsets}
	if _, err := ec.c.Create(ctx, endpointsResource, ep); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create endpoints %s: exists but not in the cache yet: %w", key, err)
		}
		return fmt.Errorf("create endpoints %s: %w", key, err)
	}
	return nil
}

// nodeReady reads the node's Ready condition from the cache; a node the
// cache does not know is taken as ready (its pods' own readiness decides).
func (ec *Controller) nodeReady(name string) bool {
	o, ok := ec.nodes.Get("", name)
	if !ok {
		return true
	}
	return conditions.NodeReady(o.(*corev1.Node))
}

// Subsets builds the Endpoints subsets of svc from pods (already matched
// by its selector). Pods without an IP, or finished, are left out. Pods
// are grouped by the ports they resolve to, so a named targetPort may map
// to different numbers on different pods; a pod that lacks a named port
// is not an endpoint of that port. The output is sorted: equal inputs give
// equal Endpoints and no needless write.
//
//lint:ignore SA1019 mirrored for old clients
func Subsets(svc *corev1.Service, pods []*corev1.Pod, nodeReady func(node string) bool) []corev1.EndpointSubset {
	type group struct {
		ports           []corev1.EndpointPort
		ready, notReady []corev1.EndpointAddress
	}
	groups := map[string]*group{}
	for _, p := range pods {
		if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ports := ResolvePorts(svc, p)
		if len(ports) == 0 && len(svc.Spec.Ports) > 0 {
			continue
		}
		k := portsKey(ports)
		g, ok := groups[k]
		if !ok {
			g = &group{ports: ports}
			groups[k] = g
		}
		addr := corev1.EndpointAddress{
			IP:        p.Status.PodIP,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		}
		if p.Spec.NodeName != "" {
			node := p.Spec.NodeName
			addr.NodeName = &node
		}
		if p.Spec.Hostname != "" && p.Spec.Subdomain == svc.Name {
			addr.Hostname = p.Spec.Hostname
		}
		ready := conditions.PodReady(p) && p.DeletionTimestamp == nil && (p.Spec.NodeName == "" || nodeReady(p.Spec.NodeName))
		if ready || svc.Spec.PublishNotReadyAddresses {
			g.ready = append(g.ready, addr)
		} else {
			g.notReady = append(g.notReady, addr)
		}
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	//lint:ignore SA1019 mirrored for old clients
	var out []corev1.EndpointSubset
	for _, k := range keys {
		g := groups[k]
		sortAddresses(g.ready)
		sortAddresses(g.notReady)
		//lint:ignore SA1019 mirrored for old clients
		out = append(out, corev1.EndpointSubset{Addresses: g.ready, NotReadyAddresses: g.notReady, Ports: g.ports})
	}
	return out
}

// ResolvePorts maps each Service port to the pod's port: a number as is,
// a name through the pod's container ports of the same protocol.
func ResolvePorts(svc *corev1.Service, p *corev1.Pod) []corev1.EndpointPort {
	var out []corev1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		port, ok := targetPort(sp, proto, p)
		if !ok {
			continue
		}
		out = append(out, corev1.EndpointPort{Name: sp.Name, Port: port, Protocol: proto, AppProtocol: sp.AppProtocol})
	}
	return out
}

func targetPort(sp corev1.ServicePort, proto corev1.Protocol, p *corev1.Pod) (int32, bool) {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.Int && tp.IntVal != 0:
		return tp.IntVal, true
	case tp.Type == intstr.String && tp.StrVal != "":
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				cproto := cp.Protocol
				if cproto == "" {
					cproto = corev1.ProtocolTCP
				}
				if cp.Name == tp.StrVal && cproto == proto {
					return cp.ContainerPort, true
				}
			}
		}
		return 0, false
	}
	return sp.Port, true // no targetPort: the port itself
}

func portsKey(ports []corev1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%s/%d/%s,", p.Name, p.Port, p.Protocol)
	}
	return b.String()
}

func sortAddresses(a []corev1.EndpointAddress) {
	sort.Slice(a, func(i, j int) bool {
		if a[i].IP != a[j].IP {
			return a[i].IP < a[j].IP
		}
		return a[i].TargetRef.Name < a[j].TargetRef.Name
	})
}

func splitKey(key string) (string, string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
