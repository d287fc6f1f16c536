package printers

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skep-io/skep/controlplane/api"
)

// The API server registers these as its resources' TableConvertors: this
// is k8s.io/apiserver's rest.TableConvertor, restated so that the test does
// not need the apiserver's registry packages (and the CEL modules they
// pull into go.mod) before the server wiring does.
var _ interface {
	ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error)
} = (*TableConvertor)(nil)

// now is the fixed moment every AGE in these tests counts to.
var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

func objectMeta(name string, created time.Duration) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: ago(created), ResourceVersion: "7"}
}

func ptr[T any](v T) *T { return &v }

func convert(t *testing.T, gk schema.GroupKind, obj runtime.Object, opts runtime.Object) *metav1.Table {
	t.Helper()
	c := ForKind(gk)
	c.Now = func() time.Time { return now }
	table, err := c.ConvertToTable(context.Background(), obj, opts)
	if err != nil {
		t.Fatalf("ConvertToTable(%T): %v", obj, err)
	}
	return table
}

// printed is a row's cells as kubectl prints them.
func printed(row metav1.TableRow) []string {
	out := make([]string, len(row.Cells))
	for i, c := range row.Cells {
		out[i] = fmt.Sprint(c)
	}
	return out
}

var (
	podColumns  = []string{"Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"}
	podWide     = []string{"IP", "Node", "Nominated Node", "Readiness Gates"}
	running     = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: ago(time.Hour)}}
	containers2 = []corev1.Container{{Name: "web", Image: "nginx:1.27"}, {Name: "sidecar", Image: "envoy:1.31"}}
)

func waiting(reason string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}
}

func terminated(reason string, code int32) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code}}
}

// lastExit is a container's previous run, ended d ago.
func lastExit(d time.Duration) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1, FinishedAt: ago(d)}}
}

func pod(name string, created time.Duration, spec corev1.PodSpec, status corev1.PodStatus) *corev1.Pod {
	if spec.Containers == nil {
		spec.Containers = []corev1.Container{{Name: "web", Image: "nginx:1.27"}}
	}
	return &corev1.Pod{ObjectMeta: objectMeta(name, created), Spec: spec, Status: status}
}

// TestTables prints one object of every kind and checks the columns
// (names in order, which only -o wide shows) and the cells against what
// kubectl 1.32 prints for the same object from a Kubernetes cluster. The
// rule each cell follows is kubectl's (pkg/printers/internalversion).
func TestTables(t *testing.T) {
	deleting := metav1.NewTime(now.Add(-10 * time.Second))
	always := corev1.ContainerRestartPolicyAlways
	terminatingPod := pod("web-term", time.Hour, corev1.PodSpec{NodeName: "node-1"}, corev1.PodStatus{Phase: corev1.PodRunning,
		PodIPs:            []corev1.PodIP{{IP: "10.244.1.7"}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "web", Ready: true, State: running}}})
	terminatingPod.DeletionTimestamp = &deleting

	tests := []struct {
		name    string
		gk      schema.GroupKind
		obj     runtime.Object
		columns []string // every column, in order
		wide    []string // those of Priority 1, shown only with -o wide
		cells   []string
	}{
		{
			// Nothing has started: STATUS is the phase, no IP, no node yet.
			name: "pod pending", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj:   pod("web-0", 10*time.Second, corev1.PodSpec{}, corev1.PodStatus{Phase: corev1.PodPending}),
			cells: []string{"web-0", "0/1", "Pending", "0", "10s", "<none>", "<none>", "<none>", "<none>"},
		},
		{
			// A waiting container's reason replaces the phase.
			name: "pod creating", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-1", 30*time.Second, corev1.PodSpec{NodeName: "node-1"}, corev1.PodStatus{Phase: corev1.PodPending,
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", State: waiting("ContainerCreating")}}}),
			cells: []string{"web-1", "0/1", "ContainerCreating", "0", "30s", "<none>", "node-1", "<none>", "<none>"},
		},
		{
			// READY counts running, ready containers; READINESS GATES the
			// gates whose condition is True.
			name: "pod running and ready", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-2", 3*time.Hour, corev1.PodSpec{NodeName: "node-1", Containers: containers2,
				ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}}}, corev1.PodStatus{Phase: corev1.PodRunning,
				PodIPs:     []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00::5"}},
				Conditions: []corev1.PodCondition{{Type: "example.com/lb", Status: corev1.ConditionTrue}},
				ContainerStatuses: []corev1.ContainerStatus{
					{Name: "web", Ready: true, State: running},
					{Name: "sidecar", Ready: true, State: running},
				}}),
			cells: []string{"web-2", "2/2", "Running", "0", "3h", "10.244.1.5", "node-1", "<none>", "1/1"},
		},
		{
			// RESTARTS adds when the last restart was: "3 (5m ago)".
			name: "pod crashlooping", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-3", 25*time.Minute, corev1.PodSpec{NodeName: "node-2", Containers: containers2}, corev1.PodStatus{Phase: corev1.PodRunning,
				PodIPs: []corev1.PodIP{{IP: "10.244.2.9"}},
				ContainerStatuses: []corev1.ContainerStatus{
					{Name: "web", Ready: false, RestartCount: 3, State: waiting("CrashLoopBackOff"), LastTerminationState: lastExit(5 * time.Minute)},
					{Name: "sidecar", Ready: true, State: running},
				}}),
			cells: []string{"web-3", "1/2", "CrashLoopBackOff", "3 (5m ago)", "25m", "10.244.2.9", "node-2", "<none>", "<none>"},
		},
		{
			// A pod being deleted is Terminating until it has finished.
			name: "pod terminating", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj:   terminatingPod,
			cells: []string{"web-term", "1/1", "Terminating", "0", "60m", "10.244.1.7", "node-1", "<none>", "<none>"},
		},
		{
			// Init:i/n names how many init containers are done.
			name: "pod initializing", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-4", 90*time.Second, corev1.PodSpec{NodeName: "node-1",
				InitContainers: []corev1.Container{{Name: "migrate"}, {Name: "warm"}}}, corev1.PodStatus{Phase: corev1.PodPending,
				InitContainerStatuses: []corev1.ContainerStatus{
					{Name: "migrate", State: terminated("Completed", 0)},
					{Name: "warm", State: running},
				},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", State: waiting("PodInitializing")}}}),
			cells: []string{"web-4", "0/1", "Init:1/2", "0", "90s", "<none>", "node-1", "<none>", "<none>"},
		},
		{
			// A failing init container: Init:REASON, and RESTARTS are its own.
			name: "pod init crashlooping", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-5", 8*time.Minute, corev1.PodSpec{NodeName: "node-1",
				InitContainers: []corev1.Container{{Name: "migrate"}}}, corev1.PodStatus{Phase: corev1.PodPending,
				InitContainerStatuses: []corev1.ContainerStatus{
					{Name: "migrate", RestartCount: 4, State: waiting("CrashLoopBackOff"), LastTerminationState: lastExit(2 * time.Minute)},
				},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", State: waiting("PodInitializing")}}}),
			cells: []string{"web-5", "0/1", "Init:CrashLoopBackOff", "4 (2m ago)", "8m", "<none>", "node-1", "<none>", "<none>"},
		},
		{
			// An init container that exited non-zero without a reason.
			name: "pod init failed", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-6", 2*time.Minute, corev1.PodSpec{InitContainers: []corev1.Container{{Name: "migrate"}}}, corev1.PodStatus{Phase: corev1.PodPending,
				InitContainerStatuses: []corev1.ContainerStatus{{Name: "migrate", State: terminated("", 2)}}}),
			cells: []string{"web-6", "0/1", "Init:ExitCode:2", "0", "2m", "<none>", "<none>", "<none>", "<none>"},
		},
		{
			// A sidecar (restartPolicy Always) counts in READY once started.
			name: "pod with sidecar", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("web-7", 5*24*time.Hour, corev1.PodSpec{NodeName: "node-1",
				InitContainers: []corev1.Container{{Name: "proxy", RestartPolicy: &always}}}, corev1.PodStatus{Phase: corev1.PodRunning,
				PodIPs:     []corev1.PodIP{{IP: "10.244.1.8"}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}},
				InitContainerStatuses: []corev1.ContainerStatus{
					{Name: "proxy", Ready: true, Started: ptr(true), RestartCount: 1, State: running, LastTerminationState: lastExit(time.Hour)},
				},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", Ready: true, State: running}}}),
			cells: []string{"web-7", "2/2", "Running", "1 (60m ago)", "5d", "10.244.1.8", "node-1", "<none>", "<none>"},
		},
		{
			// A finished pod says why its container ended.
			name: "pod completed", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj: pod("job-1", 26*time.Hour, corev1.PodSpec{NodeName: "node-2"}, corev1.PodStatus{Phase: corev1.PodSucceeded,
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", State: terminated("Completed", 0)}}}),
			cells: []string{"job-1", "0/1", "Completed", "0", "26h", "<none>", "node-2", "<none>", "<none>"},
		},
		{
			// The pod's own reason (set by the kubelet on eviction) wins
			// over the phase.
			name: "pod evicted", gk: schema.GroupKind{Kind: "Pod"}, columns: podColumns, wide: podWide,
			obj:   pod("web-8", 4*time.Hour, corev1.PodSpec{NodeName: "node-2"}, corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}),
			cells: []string{"web-8", "0/1", "Evicted", "0", "4h", "<none>", "node-2", "<none>", "<none>"},
		},
		{
			// Only the Ready condition counts; a cordoned node adds
			// SchedulingDisabled; ROLES from node-role.kubernetes.io/ labels.
			name: "node ready and cordoned", gk: schema.GroupKind{Kind: "Node"},
			columns: []string{"Name", "Status", "Roles", "Age", "Version", "Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"},
			wide:    []string{"Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"},
			obj: &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "node-1", CreationTimestamp: ago(50 * time.Hour),
					Labels: map[string]string{"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "node-1"}},
				Spec: corev1.NodeSpec{Unschedulable: true},
				Status: corev1.NodeStatus{
					Conditions: []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
					Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-1"}, {Type: corev1.NodeInternalIP, Address: "10.0.0.11"}},
					NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.32.0-skep", OSImage: "Ubuntu 24.04.1 LTS", KernelVersion: "6.8.0-49-generic", ContainerRuntimeVersion: "containerd://2.0.0"},
				},
			},
			cells: []string{"node-1", "Ready,SchedulingDisabled", "control-plane,worker", "2d2h", "v1.32.0-skep", "10.0.0.11", "<none>", "Ubuntu 24.04.1 LTS", "6.8.0-49-generic", "containerd://2.0.0"},
		},
		{
			// A node that never reported: Unknown, <none> roles, <unknown>
			// system info.
			name: "node never reported", gk: schema.GroupKind{Kind: "Node"},
			columns: []string{"Name", "Status", "Roles", "Age", "Version", "Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"},
			wide:    []string{"Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"},
			obj:     &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-9", CreationTimestamp: ago(time.Minute)}},
			cells:   []string{"node-9", "Unknown", "<none>", "60s", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"},
		},
		{
			name: "namespace", gk: schema.GroupKind{Kind: "Namespace"}, columns: []string{"Name", "Status", "Age"},
			obj:   &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team", CreationTimestamp: ago(5 * 24 * time.Hour)}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}},
			cells: []string{"team", "Terminating", "5d"},
		},
		{
			name: "service cluster IP", gk: schema.GroupKind{Kind: "Service"},
			columns: []string{"Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"}, wide: []string{"Selector"},
			obj: &corev1.Service{ObjectMeta: objectMeta("web", 90*time.Minute), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP,
				ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Selector: map[string]string{"app": "web", "tier": "front"},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}}}},
			cells: []string{"web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP", "90m", "app=web,tier=front"},
		},
		{
			// PORT(S) with the node port: 80:30080/TCP.
			name: "service node port", gk: schema.GroupKind{Kind: "Service"},
			columns: []string{"Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"}, wide: []string{"Selector"},
			obj: &corev1.Service{ObjectMeta: objectMeta("web-np", time.Hour), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
				ClusterIPs: []string{"10.96.0.11"}, ExternalIPs: []string{"192.0.2.1"}, Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}}}},
			cells: []string{"web-np", "NodePort", "10.96.0.11", "192.0.2.1", "80:30080/TCP", "60m", "app=web"},
		},
		{
			// A LoadBalancer without an address yet is <pending>.
			name: "service load balancer pending", gk: schema.GroupKind{Kind: "Service"},
			columns: []string{"Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"}, wide: []string{"Selector"},
			obj: &corev1.Service{ObjectMeta: objectMeta("web-lb", time.Minute), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
				ClusterIPs: []string{"10.96.0.12"}, Ports: []corev1.ServicePort{{Port: 443, NodePort: 31443, Protocol: corev1.ProtocolTCP}}}},
			cells: []string{"web-lb", "LoadBalancer", "10.96.0.12", "<pending>", "443:31443/TCP", "60s", "<none>"},
		},
		{
			// Its ingress addresses (IP, else hostname), sorted, then its
			// external IPs.
			name: "service load balancer", gk: schema.GroupKind{Kind: "Service"},
			columns: []string{"Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"}, wide: []string{"Selector"},
			obj: &corev1.Service{ObjectMeta: objectMeta("web-lb", time.Minute),
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.12"}, ExternalIPs: []string{"198.51.100.7"},
					Ports: []corev1.ServicePort{{Port: 443, NodePort: 31443, Protocol: corev1.ProtocolTCP}}},
				Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.20"}, {Hostname: "lb.example.com"}, {IP: "192.0.2.10"}}}}},
			cells: []string{"web-lb", "LoadBalancer", "10.96.0.12", "192.0.2.10,192.0.2.20,lb.example.com,198.51.100.7", "443:31443/TCP", "60s", "<none>"},
		},
		{
			name: "service external name", gk: schema.GroupKind{Kind: "Service"},
			columns: []string{"Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"}, wide: []string{"Selector"},
			obj:   &corev1.Service{ObjectMeta: objectMeta("db", time.Minute), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}},
			cells: []string{"db", "ExternalName", "<none>", "db.example.com", "<none>", "60s", "<none>"},
		},
		{
			// IP:port for each address and port, three of them, and how many more.
			name: "endpoints", gk: schema.GroupKind{Kind: "Endpoints"}, columns: []string{"Name", "Endpoints", "Age"},
			//lint:ignore SA1019 v1 Endpoints are still served
			obj: &corev1.Endpoints{ObjectMeta: objectMeta("web", time.Hour), Subsets: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{{IP: "10.244.1.5"}, {IP: "10.244.1.6"}}, Ports: []corev1.EndpointPort{{Port: 8080}, {Port: 9090}}},
				{Addresses: []corev1.EndpointAddress{{IP: "fd00::7"}}, Ports: []corev1.EndpointPort{{Port: 8080}}},
			}},
			cells: []string{"web", "10.244.1.5:8080,10.244.1.6:8080,10.244.1.5:9090 + 2 more...", "60m"},
		},
		{
			name: "endpoints empty", gk: schema.GroupKind{Kind: "Endpoints"}, columns: []string{"Name", "Endpoints", "Age"},
			//lint:ignore SA1019 v1 Endpoints are still served
			obj:   &corev1.Endpoints{ObjectMeta: objectMeta("none", time.Hour)},
			cells: []string{"none", "<none>", "60m"},
		},
		{
			name: "replication controller", gk: schema.GroupKind{Kind: "ReplicationController"},
			columns: []string{"Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"},
			wide:    []string{"Containers", "Images", "Selector"},
			obj: &corev1.ReplicationController{ObjectMeta: objectMeta("web-rc", 4*time.Minute),
				Spec: corev1.ReplicationControllerSpec{Replicas: ptr(int32(3)), Selector: map[string]string{"app": "web"},
					Template: &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers2}}},
				Status: corev1.ReplicationControllerStatus{Replicas: 3, ReadyReplicas: 2}},
			cells: []string{"web-rc", "3", "3", "2", "4m", "web,sidecar", "nginx:1.27,envoy:1.31", "app=web"},
		},
		{
			// DATA counts data and binaryData keys.
			name: "configmap", gk: schema.GroupKind{Kind: "ConfigMap"}, columns: []string{"Name", "Data", "Age"},
			obj: &corev1.ConfigMap{ObjectMeta: objectMeta("settings", 3*time.Minute+20*time.Second),
				Data: map[string]string{"a": "1", "b": "2"}, BinaryData: map[string][]byte{"c": {0}}},
			cells: []string{"settings", "3", "3m20s"},
		},
		{
			name: "secret", gk: schema.GroupKind{Kind: "Secret"}, columns: []string{"Name", "Type", "Data", "Age"},
			obj: &corev1.Secret{ObjectMeta: objectMeta("tls", 10*24*time.Hour), Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}},
			cells: []string{"tls", "kubernetes.io/tls", "2", "10d"},
		},
		{
			name: "service account", gk: schema.GroupKind{Kind: "ServiceAccount"}, columns: []string{"Name", "Secrets", "Age"},
			obj:   &corev1.ServiceAccount{ObjectMeta: objectMeta("default", 5*24*time.Hour)},
			cells: []string{"default", "0", "5d"},
		},
		{
			// used/hard of the quota's status, by resource name; limits.* in LIMIT.
			name: "resource quota", gk: schema.GroupKind{Kind: "ResourceQuota"}, columns: []string{"Name", "Request", "Limit", "Age"},
			obj: &corev1.ResourceQuota{ObjectMeta: objectMeta("compute", 2*time.Hour),
				Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"pods": resource.MustParse("10")}},
				Status: corev1.ResourceQuotaStatus{
					Hard: corev1.ResourceList{"pods": resource.MustParse("10"), "requests.cpu": resource.MustParse("2"), "limits.memory": resource.MustParse("2Gi")},
					Used: corev1.ResourceList{"pods": resource.MustParse("3"), "requests.cpu": resource.MustParse("500m"), "limits.memory": resource.MustParse("1Gi")},
				}},
			cells: []string{"compute", "pods: 3/10, requests.cpu: 500m/2", "limits.memory: 1Gi/2Gi", "120m"},
		},
		{
			// LAST SEEN, TYPE, REASON, OBJECT (kind/name) and MESSAGE;
			// the rest only with -o wide.
			name: "event", gk: schema.GroupKind{Kind: "Event"},
			columns: []string{"Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"},
			wide:    []string{"Subobject", "Source", "First Seen", "Count", "Name"},
			obj: &corev1.Event{ObjectMeta: objectMeta("web-3.181d4f2a", 10*time.Minute),
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "web-3", FieldPath: "spec.containers{web}"},
				Type:           corev1.EventTypeWarning, Reason: "BackOff", Message: "Back-off restarting failed container web\n",
				Source:         corev1.EventSource{Component: "kubelet", Host: "node-2"},
				FirstTimestamp: ago(10 * time.Minute), LastTimestamp: ago(2 * time.Minute), Count: 5},
			cells: []string{"2m", "Warning", "BackOff", "pod/web-3", "spec.containers{web}", "kubelet, node-2", "Back-off restarting failed container web", "10m", "5", "web-3.181d4f2a"},
		},
		{
			// An events.k8s.io-style event: eventTime for both times, the
			// reporting controller as source, a count of 1.
			name: "event without timestamps", gk: schema.GroupKind{Kind: "Event"},
			columns: []string{"Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"},
			wide:    []string{"Subobject", "Source", "First Seen", "Count", "Name"},
			obj: &corev1.Event{ObjectMeta: objectMeta("web-9.181d4f2b", 30*time.Second),
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "web-9"},
				Type:           corev1.EventTypeNormal, Reason: "Scheduled", Message: "Successfully assigned default/web-9 to node-1",
				EventTime: metav1.NewMicroTime(now.Add(-30 * time.Second)), ReportingController: "skep-scheduler"},
			cells: []string{"30s", "Normal", "Scheduled", "pod/web-9", "", "skep-scheduler", "Successfully assigned default/web-9 to node-1", "30s", "1", "web-9.181d4f2b"},
		},
		{
			// READY is ready/desired.
			name: "deployment", gk: schema.GroupKind{Group: "apps", Kind: "Deployment"},
			columns: []string{"Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"},
			wide:    []string{"Containers", "Images", "Selector"},
			obj: &appsv1.Deployment{ObjectMeta: objectMeta("web", 7*time.Hour+30*time.Minute),
				Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(3)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers2}}},
				Status: appsv1.DeploymentStatus{ReadyReplicas: 2, UpdatedReplicas: 3, AvailableReplicas: 2}},
			cells: []string{"web", "2/3", "3", "2", "7h30m", "web,sidecar", "nginx:1.27,envoy:1.31", "app=web"},
		},
		{
			name: "replica set", gk: schema.GroupKind{Group: "apps", Kind: "ReplicaSet"},
			columns: []string{"Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"},
			wide:    []string{"Containers", "Images", "Selector"},
			obj: &appsv1.ReplicaSet{ObjectMeta: objectMeta("web-5d4f8", 7*time.Hour),
				Spec: appsv1.ReplicaSetSpec{Replicas: ptr(int32(3)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "pod-template-hash": "5d4f8"}},
					Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers2[:1]}}},
				Status: appsv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 1}},
			cells: []string{"web-5d4f8", "3", "3", "1", "7h", "web", "nginx:1.27", "app=web,pod-template-hash=5d4f8"},
		},
		{
			// PORTS: number, else name, else *; ENDPOINTS: three addresses
			// and how many more.
			name: "endpoint slice", gk: schema.GroupKind{Group: "discovery.k8s.io", Kind: "EndpointSlice"},
			columns: []string{"Name", "AddressType", "Ports", "Endpoints", "Age"},
			obj: &discoveryv1.EndpointSlice{ObjectMeta: objectMeta("web-x7k2p", 45*time.Second), AddressType: discoveryv1.AddressTypeIPv4,
				Ports: []discoveryv1.EndpointPort{{Port: ptr(int32(8080))}, {Name: ptr("metrics")}, {}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}}, {Addresses: []string{"10.244.1.6"}},
					{Addresses: []string{"10.244.2.5"}}, {Addresses: []string{"10.244.2.6"}}, {Addresses: []string{"10.244.3.5"}}}},
			cells: []string{"web-x7k2p", "IPv4", "8080,metrics,*", "10.244.1.5,10.244.1.6,10.244.2.5 + 2 more...", "45s"},
		},
		{
			name: "endpoint slice empty", gk: schema.GroupKind{Group: "discovery.k8s.io", Kind: "EndpointSlice"},
			columns: []string{"Name", "AddressType", "Ports", "Endpoints", "Age"},
			obj:     &discoveryv1.EndpointSlice{ObjectMeta: objectMeta("web-empty", 45*time.Second), AddressType: discoveryv1.AddressTypeIPv6},
			cells:   []string{"web-empty", "IPv6", "<unset>", "<unset>", "45s"},
		},
		{
			name: "lease", gk: schema.GroupKind{Group: "coordination.k8s.io", Kind: "Lease"}, columns: []string{"Name", "Holder", "Age"},
			obj:   &coordinationv1.Lease{ObjectMeta: objectMeta("skep-scheduler", 400*24*time.Hour), Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr("server-1_4b1c")}},
			cells: []string{"skep-scheduler", "server-1_4b1c", "400d"},
		},
		{
			// kubectl's default for a kind it has no printer for.
			name: "unknown kind", gk: schema.GroupKind{Group: "example.com", Kind: "Widget"}, columns: []string{"Name", "Age"},
			obj:   &metav1.PartialObjectMetadata{ObjectMeta: objectMeta("gadget", 3*365*24*time.Hour)},
			cells: []string{"gadget", "3y"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table := convert(t, tc.gk, tc.obj, nil)
			var columns, wide []string
			for _, c := range table.ColumnDefinitions {
				columns = append(columns, c.Name)
				if c.Priority > 0 {
					wide = append(wide, c.Name)
				}
			}
			if !slices.Equal(columns, tc.columns) || !slices.Equal(wide, tc.wide) {
				t.Errorf("columns %q, wide %q; want %q, wide %q", columns, wide, tc.columns, tc.wide)
			}
			if len(table.Rows) != 1 {
				t.Fatalf("%d rows; want 1", len(table.Rows))
			}
			row := table.Rows[0]
			if got := printed(row); !slices.Equal(got, tc.cells) {
				t.Errorf("cells\n  %q\nwant\n  %q", got, tc.cells)
			}
			if len(row.Cells) != len(table.ColumnDefinitions) {
				t.Errorf("%d cells for %d columns", len(row.Cells), len(table.ColumnDefinitions))
			}
			if row.Object.Object != tc.obj {
				t.Errorf("row object %v; want the object printed, for includeObject", row.Object.Object)
			}
			if table.ResourceVersion != "7" && tc.gk.Kind != "Node" && tc.gk.Kind != "Namespace" {
				t.Errorf("table resourceVersion %q; want the object's, 7", table.ResourceVersion)
			}
		})
	}
}

// TestFinishedPodRowIsCompleted checks the row condition kubectl's watch
// uses to tell finished pods apart.
func TestFinishedPodRowIsCompleted(t *testing.T) {
	for phase, want := range map[corev1.PodPhase]bool{corev1.PodSucceeded: true, corev1.PodFailed: true, corev1.PodRunning: false} {
		table := convert(t, schema.GroupKind{Kind: "Pod"}, pod("p", time.Minute, corev1.PodSpec{}, corev1.PodStatus{Phase: phase}), nil)
		conds := table.Rows[0].Conditions
		got := len(conds) == 1 && conds[0].Type == metav1.RowCompleted && conds[0].Status == metav1.ConditionTrue && conds[0].Reason == string(phase)
		if got != want {
			t.Errorf("pod %s: row conditions %+v; want Completed: %v", phase, conds, want)
		}
	}
}

// TestListTable checks a list prints as one row an item, in order, with
// the list's metadata, so that a client can page and watch from a Table;
// and that NoHeaders (what the server asks for the events of a watch after
// the first) leaves the columns out.
func TestListTable(t *testing.T) {
	remaining := int64(5)
	list := &corev1.PodList{
		ListMeta: metav1.ListMeta{ResourceVersion: "42", Continue: "next-page", RemainingItemCount: &remaining},
		Items: []corev1.Pod{
			*pod("a", time.Minute, corev1.PodSpec{}, corev1.PodStatus{Phase: corev1.PodPending}),
			*pod("b", time.Minute, corev1.PodSpec{}, corev1.PodStatus{Phase: corev1.PodPending}),
		},
	}
	table := convert(t, schema.GroupKind{Kind: "Pod"}, list, nil)
	if table.ResourceVersion != "42" || table.Continue != "next-page" || table.RemainingItemCount == nil || *table.RemainingItemCount != 5 {
		t.Errorf("table metadata %+v; want resourceVersion 42, continue next-page, 5 remaining", table.ListMeta)
	}
	if len(table.Rows) != 2 || table.Rows[0].Cells[0] != "a" || table.Rows[1].Cells[0] != "b" {
		t.Fatalf("rows %v; want a then b", table.Rows)
	}
	if table.Rows[1].Object.Object != &list.Items[1] {
		t.Errorf("row b carries %v; want the list's item b", table.Rows[1].Object.Object)
	}
	if len(table.ColumnDefinitions) != len(podColumns) {
		t.Errorf("%d columns; want the pod's %d", len(table.ColumnDefinitions), len(podColumns))
	}

	empty := convert(t, schema.GroupKind{Kind: "Pod"}, &corev1.PodList{}, nil)
	if empty.Rows == nil || len(empty.Rows) != 0 {
		t.Errorf("empty list: rows %#v; want [] (rows: [] in JSON, not null)", empty.Rows)
	}

	headless := convert(t, schema.GroupKind{Kind: "Pod"}, list, &metav1.TableOptions{NoHeaders: true})
	if len(headless.ColumnDefinitions) != 0 || len(headless.Rows) != 2 {
		t.Errorf("NoHeaders: %d columns, %d rows; want no columns and both rows", len(headless.ColumnDefinitions), len(headless.Rows))
	}
}

// TestConvertRefuses checks the errors: an object of another kind, and
// table options of a type the server does not send.
func TestConvertRefuses(t *testing.T) {
	c := ForKind(schema.GroupKind{Kind: "Pod"})
	if _, err := c.ConvertToTable(context.Background(), &corev1.Service{}, nil); err == nil {
		t.Error("a Service printed as a pod; want an error")
	}
	if _, err := c.ConvertToTable(context.Background(), &corev1.Pod{}, &metav1.ListOptions{}); err == nil {
		t.Error("ListOptions accepted as table options; want an error naming TableOptions")
	}
}

// TestEveryResourceHasItsPrinter checks that every kind the API serves
// gets kubectl's columns, not the NAME/AGE fallback.
func TestEveryResourceHasItsPrinter(t *testing.T) {
	for _, r := range api.All() {
		if _, ok := byKind[schema.GroupKind{Group: r.Group, Kind: r.Kind}]; !ok {
			t.Errorf("%s (%s) has no printer; kubectl get %s would print only NAME and AGE", r.Kind, r.APIVersion(), r.Name)
		}
		if got := For(r); len(got.printer.columns) == 0 {
			t.Errorf("For(%s) has no columns", r.Name)
		}
	}
}
