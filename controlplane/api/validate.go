package api

import (
	"fmt"
	"net/netip"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Validate checks an object as the Kubernetes API server would at create,
// after defaulting. It returns every problem at once, each naming its field.
func Validate(r *Resource, obj Object) field.ErrorList {
	errs := apivalidation.ValidateObjectMetaAccessor(obj, r.Namespaced, nameRule(r), field.NewPath("metadata"))
	switch o := obj.(type) {
	case *corev1.Pod:
		errs = append(errs, validatePodSpec(&o.Spec, field.NewPath("spec"))...)
	case *corev1.Service:
		errs = append(errs, validateService(o)...)
	//lint:ignore SA1019 v1 Endpoints are still served, for old clients
	case *corev1.Endpoints:
		errs = append(errs, validateEndpoints(o)...)
	case *discoveryv1.EndpointSlice:
		errs = append(errs, validateEndpointSlice(o)...)
	case *appsv1.Deployment:
		errs = append(errs, validateReplicas(o.Spec.Replicas)...)
		errs = append(errs, validateSelectorAndTemplate(o.Spec.Selector, &o.Spec.Template)...)
		errs = append(errs, validateStrategy(o.Spec.Strategy)...)
	case *appsv1.ReplicaSet:
		errs = append(errs, validateReplicas(o.Spec.Replicas)...)
		errs = append(errs, validateSelectorAndTemplate(o.Spec.Selector, &o.Spec.Template)...)
	case *corev1.ReplicationController:
		errs = append(errs, validateReplicas(o.Spec.Replicas)...)
		errs = append(errs, validateRC(o)...)
	case *corev1.ResourceQuota:
		errs = append(errs, validateQuota(o)...)
	case *corev1.ConfigMap:
		errs = append(errs, validateConfigMap(o)...)
	case *corev1.Secret:
		errs = append(errs, validateSecret(o)...)
	case *corev1.Event:
		errs = append(errs, validateEvent(o)...)
	case *corev1.Node:
		errs = append(errs, validateNodeSpec(&o.Spec)...)
	case *coordinationv1.Lease, *corev1.Namespace, *corev1.ServiceAccount:
	}
	return errs
}

// validateNodeSpec checks a Node's pod CIDRs as Kubernetes does: each a
// CIDR, no two of one family, podCIDR the first of podCIDRs (when both are
// given).
func validateNodeSpec(s *corev1.NodeSpec) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if len(s.PodCIDRs) > 0 && s.PodCIDR != s.PodCIDRs[0] {
		errs = append(errs, field.Invalid(p.Child("podCIDR"), s.PodCIDR, "must be the first of spec.podCIDRs"))
	}
	if len(s.PodCIDRs) > 2 {
		errs = append(errs, field.TooMany(p.Child("podCIDRs"), len(s.PodCIDRs), 2))
	}
	if s.PodCIDR != "" && len(s.PodCIDRs) == 0 {
		if pre, err := netip.ParsePrefix(s.PodCIDR); err != nil || pre != pre.Masked() {
			errs = append(errs, field.Invalid(p.Child("podCIDR"), s.PodCIDR, "must be a CIDR such as 10.244.1.0/24 (with no host bits set)"))
		}
	}
	families := map[bool]bool{}
	for i, c := range s.PodCIDRs {
		pre, err := netip.ParsePrefix(c)
		if err != nil || pre != pre.Masked() {
			errs = append(errs, field.Invalid(p.Child("podCIDRs").Index(i), c, "must be a CIDR such as 10.244.1.0/24 (with no host bits set)"))
			continue
		}
		if families[pre.Addr().Is4()] {
			errs = append(errs, field.Invalid(p.Child("podCIDRs").Index(i), c, "may hold one CIDR of each IP family"))
		}
		families[pre.Addr().Is4()] = true
	}
	return errs
}

// ValidateUpdate adds to Validate the rules about what may not change.
func ValidateUpdate(r *Resource, obj, old Object) field.ErrorList {
	errs := Validate(r, obj)
	errs = append(errs, apivalidation.ValidateObjectMetaAccessorUpdate(obj, old, field.NewPath("metadata"))...)
	switch o := obj.(type) {
	case *corev1.Service:
		prev := old.(*corev1.Service)
		if o.Spec.ClusterIP != prev.Spec.ClusterIP && prev.Spec.ClusterIP != "" && o.Spec.Type != corev1.ServiceTypeExternalName && prev.Spec.Type != corev1.ServiceTypeExternalName {
			errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIP"), o.Spec.ClusterIP, "field is immutable"))
		}
	case *corev1.Secret:
		errs = append(errs, validateSecretUpdate(o, old.(*corev1.Secret))...)
	case *discoveryv1.EndpointSlice:
		errs = append(errs, apivalidation.ValidateImmutableField(o.AddressType, old.(*discoveryv1.EndpointSlice).AddressType, field.NewPath("addressType"))...)
	case *appsv1.Deployment:
		errs = append(errs, apivalidation.ValidateImmutableField(o.Spec.Selector, old.(*appsv1.Deployment).Spec.Selector, field.NewPath("spec", "selector"))...)
	case *appsv1.ReplicaSet:
		errs = append(errs, apivalidation.ValidateImmutableField(o.Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector, field.NewPath("spec", "selector"))...)
	case *corev1.Node:
		// Other nodes route a node's pod CIDR to it: moving it would take
		// their traffic, so it is fixed once the control plane set it.
		prev := old.(*corev1.Node)
		if prev.Spec.PodCIDR != "" && o.Spec.PodCIDR != prev.Spec.PodCIDR {
			errs = append(errs, field.Invalid(field.NewPath("spec", "podCIDR"), o.Spec.PodCIDR, "field is immutable once set"))
		}
		if len(prev.Spec.PodCIDRs) > 0 && !slices.Equal(o.Spec.PodCIDRs, prev.Spec.PodCIDRs) {
			errs = append(errs, field.Invalid(field.NewPath("spec", "podCIDRs"), o.Spec.PodCIDRs, "field is immutable once set"))
		}
	case *corev1.Pod:
		prev := old.(*corev1.Pod)
		if prev.Spec.NodeName != "" && o.Spec.NodeName != prev.Spec.NodeName {
			errs = append(errs, field.Invalid(field.NewPath("spec", "nodeName"), o.Spec.NodeName, "field is immutable once set"))
		} else {
			errs = append(errs, validatePodSpecUpdate(&o.Spec, &prev.Spec)...)
		}
	}
	return errs
}

func nameRule(r *Resource) apivalidation.ValidateNameFunc {
	switch r.Kind {
	case "Namespace":
		return apivalidation.ValidateNamespaceName
	case "Service":
		return apivalidation.NameIsDNS1035Label
	default:
		return apivalidation.NameIsDNSSubdomain
	}
}

func validateReplicas(n *int32) field.ErrorList {
	if n != nil && *n < 0 {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), *n, "must be greater than or equal to 0")}
	}
	return nil
}

var (
	restartPolicies = sets.New(corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever)
	pullPolicies    = sets.New(corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever)
	protocols       = sets.New(corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP)
	serviceTypes    = sets.New(corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName)
)

func validatePodSpec(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	volumes := sets.New[string]()
	for i, v := range s.Volumes {
		vp := p.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes.Has(v.Name) {
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes.Insert(v.Name)
		switch {
		case v.EmptyDir != nil && v.HostPath != nil:
			errs = append(errs, field.Forbidden(vp, "may not specify more than 1 volume type"))
		case v.HostPath != nil && v.HostPath.Path == "":
			errs = append(errs, field.Required(vp.Child("hostPath", "path"), ""))
		case v.EmptyDir == nil && v.HostPath == nil:
			errs = append(errs, field.NotSupported(vp, "", []string{"emptyDir", "hostPath"}))
		}
	}
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), "a pod needs at least one container"))
	}
	names := sets.New[string]()
	for i := range s.InitContainers {
		errs = append(errs, validateContainer(&s.InitContainers[i], volumes, names, p.Child("initContainers").Index(i))...)
	}
	for i := range s.Containers {
		errs = append(errs, validateContainer(&s.Containers[i], volumes, names, p.Child("containers").Index(i))...)
	}
	if !restartPolicies.Has(s.RestartPolicy) {
		errs = append(errs, field.NotSupported(p.Child("restartPolicy"), s.RestartPolicy, sets.List(restartPolicies)))
	}
	if s.TerminationGracePeriodSeconds != nil && *s.TerminationGracePeriodSeconds < 0 {
		errs = append(errs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *s.TerminationGracePeriodSeconds, "must be >= 0"))
	}
	errs = append(errs, metavalidation.ValidateLabels(s.NodeSelector, p.Child("nodeSelector"))...)
	if s.NodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(s.NodeName) {
			errs = append(errs, field.Invalid(p.Child("nodeName"), s.NodeName, msg))
		}
	}
	if s.Hostname != "" {
		for _, msg := range validation.IsDNS1123Label(s.Hostname) {
			errs = append(errs, field.Invalid(p.Child("hostname"), s.Hostname, msg))
		}
	}
	return errs
}

func validateContainer(c *corev1.Container, volumes, names sets.Set[string], p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	for _, msg := range validation.IsDNS1123Label(c.Name) {
		errs = append(errs, field.Invalid(p.Child("name"), c.Name, msg))
	}
	if names.Has(c.Name) {
		errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
	}
	names.Insert(c.Name)
	if c.Image == "" {
		errs = append(errs, field.Required(p.Child("image"), "the image to run"))
	}
	if !pullPolicies.Has(c.ImagePullPolicy) {
		errs = append(errs, field.NotSupported(p.Child("imagePullPolicy"), c.ImagePullPolicy, sets.List(pullPolicies)))
	}
	portNames := sets.New[string]()
	for i, port := range c.Ports {
		pp := p.Child("ports").Index(i)
		for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
		}
		if port.Name != "" {
			for _, msg := range validation.IsValidPortName(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if portNames.Has(port.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			portNames.Insert(port.Name)
		}
		if !protocols.Has(port.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, sets.List(protocols)))
		}
	}
	for i, m := range c.VolumeMounts {
		mp := p.Child("volumeMounts").Index(i)
		if !volumes.Has(m.Name) {
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		if m.MountPath == "" {
			errs = append(errs, field.Required(mp.Child("mountPath"), ""))
		}
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		limit, hasLimit := c.Resources.Limits[name]
		req, hasReq := c.Resources.Requests[name]
		if hasLimit && hasReq && req.Cmp(limit) > 0 {
			errs = append(errs, field.Invalid(p.Child("resources", "requests").Key(string(name)), req.String(), fmt.Sprintf("must be less than or equal to %s limit of %s", name, limit.String())))
		}
	}
	for _, probe := range []struct {
		name string
		p    *corev1.Probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
		if probe.p != nil {
			errs = append(errs, validateProbe(probe.p, p.Child(probe.name))...)
		}
	}
	return errs
}

func validateProbe(pr *corev1.Probe, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	handlers := 0
	if pr.HTTPGet != nil {
		handlers++
		errs = append(errs, validatePortOrName(pr.HTTPGet.Port, p.Child("httpGet", "port"))...)
	}
	if pr.TCPSocket != nil {
		handlers++
		errs = append(errs, validatePortOrName(pr.TCPSocket.Port, p.Child("tcpSocket", "port"))...)
	}
	if pr.Exec != nil {
		handlers++
		if len(pr.Exec.Command) == 0 {
			errs = append(errs, field.Required(p.Child("exec", "command"), ""))
		}
	}
	if pr.GRPC != nil {
		errs = append(errs, field.NotSupported(p.Child("grpc"), "", []string{"httpGet", "tcpSocket", "exec"}))
	}
	if handlers != 1 {
		errs = append(errs, field.Required(p, "exactly one of httpGet, tcpSocket or exec"))
	}
	for _, f := range []struct {
		name string
		v    int32
		min  int32
	}{{"initialDelaySeconds", pr.InitialDelaySeconds, 0}, {"timeoutSeconds", pr.TimeoutSeconds, 1}, {"periodSeconds", pr.PeriodSeconds, 1}, {"successThreshold", pr.SuccessThreshold, 1}, {"failureThreshold", pr.FailureThreshold, 1}} {
		if f.v < f.min {
			errs = append(errs, field.Invalid(p.Child(f.name), f.v, fmt.Sprintf("must be at least %d", f.min)))
		}
	}
	return errs
}

func validatePortOrName(port intstr.IntOrString, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if port.Type == intstr.Int {
		for _, msg := range validation.IsValidPortNum(port.IntValue()) {
			errs = append(errs, field.Invalid(p, port.IntValue(), msg))
		}
		return errs
	}
	for _, msg := range validation.IsValidPortName(port.StrVal) {
		errs = append(errs, field.Invalid(p, port.StrVal, msg))
	}
	return errs
}

func validateService(s *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if !serviceTypes.Has(s.Spec.Type) {
		errs = append(errs, field.NotSupported(p.Child("type"), s.Spec.Type, sets.List(serviceTypes)))
		return errs
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		if s.Spec.ExternalName == "" {
			errs = append(errs, field.Required(p.Child("externalName"), "a DNS name for type ExternalName"))
		}
		for _, msg := range validation.IsDNS1123Subdomain(s.Spec.ExternalName) {
			errs = append(errs, field.Invalid(p.Child("externalName"), s.Spec.ExternalName, msg))
		}
		if s.Spec.ClusterIP != "" {
			errs = append(errs, field.Forbidden(p.Child("clusterIP"), "may not be set for type ExternalName"))
		}
		return errs
	}
	if len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(p.Child("ports"), ""))
	}
	if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		if a, err := netip.ParseAddr(ip); err != nil || !a.Is4() {
			errs = append(errs, field.Invalid(p.Child("clusterIP"), ip, "must be empty, 'None', or a valid IPv4 address"))
		}
	}
	if s.Spec.ClusterIP == corev1.ClusterIPNone && s.Spec.Type != corev1.ServiceTypeClusterIP {
		errs = append(errs, field.Invalid(p.Child("clusterIP"), s.Spec.ClusterIP, fmt.Sprintf("may not be set to 'None' for %s services", s.Spec.Type)))
	}
	names := sets.New[string]()
	seen := sets.New[string]()
	nodePorts := sets.New[string]() // a node port serves one port of one protocol
	for i, port := range s.Spec.Ports {
		pp := p.Child("ports").Index(i)
		if len(s.Spec.Ports) > 1 && port.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "ports must be named when a Service has more than one"))
		}
		if port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names.Has(port.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names.Insert(port.Name)
		}
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, msg))
		}
		if !protocols.Has(port.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, sets.List(protocols)))
		}
		key := fmt.Sprintf("%s/%d", port.Protocol, port.Port)
		if seen.Has(key) {
			errs = append(errs, field.Duplicate(pp, key))
		}
		seen.Insert(key)
		errs = append(errs, validatePortOrName(port.TargetPort, pp.Child("targetPort"))...)
		if port.NodePort != 0 {
			nodePortKey := fmt.Sprintf("%s/%d", port.Protocol, port.NodePort)
			if nodePorts.Has(nodePortKey) {
				errs = append(errs, field.Duplicate(pp.Child("nodePort"), port.NodePort))
			}
			nodePorts.Insert(nodePortKey)
			if s.Spec.Type == corev1.ServiceTypeClusterIP {
				errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
			} else {
				for _, msg := range validation.IsValidPortNum(int(port.NodePort)) {
					errs = append(errs, field.Invalid(pp.Child("nodePort"), port.NodePort, msg))
				}
			}
		}
	}
	switch s.Spec.SessionAffinity {
	case corev1.ServiceAffinityNone:
		if s.Spec.SessionAffinityConfig != nil && s.Spec.SessionAffinityConfig.ClientIP != nil {
			errs = append(errs, field.Forbidden(p.Child("sessionAffinityConfig"), "must not be set when sessionAffinity is None"))
		}
	case corev1.ServiceAffinityClientIP:
		t := s.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds
		if *t <= 0 || *t > 86400 {
			errs = append(errs, field.Invalid(p.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds"), *t, "must be greater than 0 and less than or equal to 86400"))
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("sessionAffinity"), s.Spec.SessionAffinity, []corev1.ServiceAffinity{corev1.ServiceAffinityClientIP, corev1.ServiceAffinityNone}))
	}
	if s.Spec.ExternalTrafficPolicy != "" {
		if s.Spec.Type == corev1.ServiceTypeClusterIP {
			errs = append(errs, field.Invalid(p.Child("externalTrafficPolicy"), s.Spec.ExternalTrafficPolicy, "may only be set for NodePort and LoadBalancer services"))
		} else if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster && s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			errs = append(errs, field.NotSupported(p.Child("externalTrafficPolicy"), s.Spec.ExternalTrafficPolicy, []string{"Cluster", "Local"}))
		}
	}
	for i, ip := range s.Spec.ExternalIPs {
		if a, err := netip.ParseAddr(ip); err != nil || !a.Is4() {
			errs = append(errs, field.Invalid(p.Child("externalIPs").Index(i), ip, "must be a valid IPv4 address"))
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(s.Spec.Selector, p.Child("selector"))...)
	return errs
}

// validateConfigMap checks keys as Kubernetes does: each a valid file
// name, in data or binaryData but not both.
func validateConfigMap(cm *corev1.ConfigMap) field.ErrorList {
	var errs field.ErrorList
	for k := range cm.Data {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, msg))
		}
	}
	for k := range cm.BinaryData {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, msg))
		}
		if _, dup := cm.Data[k]; dup {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, "duplicate of key present in data"))
		}
	}
	return errs
}

//lint:ignore SA1019 v1 Endpoints are still served, for old clients
func validateEndpoints(e *corev1.Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range e.Subsets {
		sp := field.NewPath("subsets").Index(i)
		for j, a := range append(append([]corev1.EndpointAddress{}, ss.Addresses...), ss.NotReadyAddresses...) {
			if _, err := netip.ParseAddr(a.IP); err != nil {
				errs = append(errs, field.Invalid(sp.Child("addresses").Index(j).Child("ip"), a.IP, "must be a valid IP address"))
			}
		}
		for j, port := range ss.Ports {
			for _, msg := range validation.IsValidPortNum(int(port.Port)) {
				errs = append(errs, field.Invalid(sp.Child("ports").Index(j).Child("port"), port.Port, msg))
			}
		}
	}
	return errs
}

func validateSelectorAndTemplate(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		errs = append(errs, field.Required(p.Child("selector"), "a label selector that matches spec.template.metadata.labels"))
	} else {
		errs = append(errs, metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, p.Child("selector"))...)
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err == nil && !s.Matches(labels.Set(tmpl.Labels)) {
			errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(tmpl.Labels, p.Child("template", "metadata", "labels"))...)
	errs = append(errs, validatePodSpec(&tmpl.Spec, p.Child("template", "spec"))...)
	return errs
}

func validateRC(rc *corev1.ReplicationController) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if rc.Spec.Template == nil {
		return field.ErrorList{field.Required(p.Child("template"), "")}
	}
	if len(rc.Spec.Selector) == 0 {
		errs = append(errs, field.Required(p.Child("selector"), ""))
	} else if !labels.SelectorFromSet(rc.Spec.Selector).Matches(labels.Set(rc.Spec.Template.Labels)) {
		errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), rc.Spec.Template.Labels, "`selector` does not match template `labels`"))
	}
	errs = append(errs, validatePodSpec(&rc.Spec.Template.Spec, p.Child("template", "spec"))...)
	return errs
}

func validateStrategy(s appsv1.DeploymentStrategy) field.ErrorList {
	p := field.NewPath("spec", "strategy")
	switch s.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if s.RollingUpdate != nil {
			return field.ErrorList{field.Forbidden(p.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")}
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		ru := s.RollingUpdate
		surge, _ := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, 100, true)
		unavail, _ := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, 100, false)
		if surge == 0 && unavail == 0 {
			return field.ErrorList{field.Invalid(p.Child("rollingUpdate", "maxUnavailable"), ru.MaxUnavailable.String(), "may not be 0 when `maxSurge` is 0")}
		}
	default:
		return field.ErrorList{field.NotSupported(p.Child("type"), s.Type, []string{"Recreate", "RollingUpdate"})}
	}
	return nil
}

// QuotaResources are the names a ResourceQuota may limit.
var QuotaResources = sets.New[corev1.ResourceName](
	corev1.ResourcePods, corev1.ResourceServices, corev1.ResourceServicesNodePorts, corev1.ResourceServicesLoadBalancers,
	corev1.ResourceRequestsCPU, corev1.ResourceRequestsMemory, corev1.ResourceLimitsCPU, corev1.ResourceLimitsMemory,
	corev1.ResourceCPU, corev1.ResourceMemory, "count/deployments.apps", "count/replicasets.apps", "replicationcontrollers",
)

func validateQuota(q *corev1.ResourceQuota) field.ErrorList {
	var errs field.ErrorList
	for name, v := range q.Spec.Hard {
		fp := field.NewPath("spec", "hard").Key(string(name))
		if !QuotaResources.Has(name) {
			errs = append(errs, field.NotSupported(fp, name, sets.List(QuotaResources)))
		}
		if v.Cmp(resource.Quantity{}) < 0 {
			errs = append(errs, field.Invalid(fp, v.String(), "must be greater than or equal to 0"))
		}
	}
	return errs
}
