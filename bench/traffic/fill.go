package traffic

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
)

// The other Services ("fillers") are what N counts: ClusterIP Services
// without a selector, each with an Endpoints object of two backends.
// Their backends are addresses in fillerRange, the last /24 of the lab's
// pod range, which no node of a small lab is given: a node that does not
// exist. Nothing ever connects to them.
//
// Names place the measured Services in KUBE-SERVICES, which skep's
// iptables mode writes sorted by namespace, name, port name and protocol:
// "a-echo" comes before every filler, "z-echo" after every one, and
// "m-echo" between the fillers' two halves, "b-fill-*" (even i) and
// "y-fill-*" (odd i). kube-proxy itself writes them in Go map order, a
// new random order at every full sync, so a Service sits anywhere and on
// average in the middle: m-echo is where kube-proxy puts it on average,
// a-echo and z-echo are the best and the worst case.
const maxFillers = 99999

var fillerRange = netip.MustParsePrefix("10.244.255.0/24")

// The measured Services, by where they sit among the fillers.
const (
	firstService  = "a-echo"
	middleService = "m-echo"
	lastService   = "z-echo"
)

func fillerName(i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("b-fill-%05d", i)
	}
	return fmt.Sprintf("y-fill-%05d", i)
}

// fillerBackends are two addresses in fillerRange for filler i.
func fillerBackends(i int) [2]netip.Addr {
	base := fillerRange.Addr().As4()
	var out [2]netip.Addr
	for j := range out {
		a := base
		a[3] = byte(1 + (2*i+j)%250)
		out[j] = netip.AddrFrom4(a)
	}
	return out
}

func fillerService(i int) *corev1.Service {
	return &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: fillerName(i), Namespace: namespace,
			Labels: map[string]string{"skep.io/bench": "filler"}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: servicePort, TargetPort: intstr.FromInt32(echoPort),
				Protocol: corev1.ProtocolTCP}},
		},
	}
}

//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
func fillerEndpoints(i int) *corev1.Endpoints {
	var addrs []corev1.EndpointAddress
	for _, a := range fillerBackends(i) {
		addrs = append(addrs, corev1.EndpointAddress{IP: a.String()})
	}
	//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
	return &corev1.Endpoints{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Endpoints"},
		ObjectMeta: metav1.ObjectMeta{Name: fillerName(i), Namespace: namespace,
			Labels: map[string]string{"skep.io/bench": "filler"}},
		//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
		Subsets: []corev1.EndpointSubset{{
			Addresses: addrs,
			Ports:     []corev1.EndpointPort{{Name: "http", Port: echoPort, Protocol: corev1.ProtocolTCP}},
		}},
	}
}

// checkFillerRange makes sure no node of the lab has a pod range that
// overlaps the fillers' backends, which must stay unanswered.
func (cl *cluster) checkFillerRange(ctx context.Context) error {
	if !netip.MustParsePrefix(lab.ClusterCIDR).Overlaps(fillerRange) {
		return fmt.Errorf("filler backends %s are outside the lab's pod range %s", fillerRange, lab.ClusterCIDR)
	}
	objs, _, err := cl.c.List(ctx, nodesR, "", client.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, o := range objs {
		n := o.(*corev1.Node)
		if p, err := netip.ParsePrefix(n.Spec.PodCIDR); err == nil && p.Overlaps(fillerRange) {
			return fmt.Errorf("node %s has pod range %s, where the filler Services' backends are (%s)", n.Name, p, fillerRange)
		}
	}
	return nil
}

// fill creates fillers from (inclusive) to to (exclusive) through the
// API, a Service and its Endpoints each, several at once.
func (cl *cluster) fill(ctx context.Context, from, to int) error {
	if to <= from {
		return nil
	}
	start := time.Now()
	const workers = 16
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
		done     atomic.Int64
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := cl.create(ctx, servicesR, fillerService(i)); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if _, err := cl.create(ctx, endpointsR, fillerEndpoints(i)); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if d := done.Add(1); d%2000 == 0 {
					cl.progress("%d/%d other Services created", from+int(d), to)
				}
			}
		}()
	}
feed:
	for i := from; i < to; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cl.progress("%d other Services in place (%d created in %s)", to, to-from, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func servingCount(backends []dataplane.Backend) int {
	n := 0
	for _, b := range backends {
		if b.Serving() {
			n++
		}
	}
	return n
}
