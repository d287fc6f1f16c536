package api

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The values of discoveryv1.LabelManagedBy on the EndpointSlices skep's
// controllers keep: one for Services with a selector (built from their
// pods), one for selectorless Services (mirrored from the Endpoints their
// user wrote), as Kubernetes' two controllers name theirs.
const (
	EndpointSliceController          = "endpointslice-controller.skep.io"
	EndpointSliceMirroringController = "endpointslicemirroring-controller.skep.io"
)

// Kubernetes' limits on one EndpointSlice (pkg/apis/discovery/validation).
const (
	maxEndpointsPerSlice = 1000
	maxAddressesPerEp    = 100
	maxPortsPerSlice     = 20000
)

// defaultEndpointSlice fills what Kubernetes' discovery/v1 defaulting
// fills: a port's name ("") and protocol (TCP), so that readers compare
// ports without nil checks.
func defaultEndpointSlice(s *discoveryv1.EndpointSlice) {
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Name == nil {
			p.Name = ptr("")
		}
		if p.Protocol == nil {
			p.Protocol = ptr(corev1.ProtocolTCP)
		}
	}
}

// validateEndpointSlice checks a slice as Kubernetes does, with one
// narrowing: only addressType IPv4 is served for now, since both
// dataplanes carry IPv4 only.
func validateEndpointSlice(s *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	switch mb := s.Labels[discoveryv1.LabelManagedBy]; mb {
	case EndpointSliceController, EndpointSliceMirroringController:
		// The agents find a Service's slices by this label.
		if s.Labels[discoveryv1.LabelServiceName] == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "labels").Key(discoveryv1.LabelServiceName),
				"an EndpointSlice managed by "+mb+" must name its Service"))
		}
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 {
		if s.AddressType == "" {
			errs = append(errs, field.Required(field.NewPath("addressType"), "supported values: \"IPv4\""))
		} else {
			errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType, []string{string(discoveryv1.AddressTypeIPv4)}))
		}
	}
	errs = append(errs, validateSliceEndpoints(s.Endpoints)...)
	errs = append(errs, validateSlicePorts(s.Ports)...)
	return errs
}

func validateSliceEndpoints(eps []discoveryv1.Endpoint) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("endpoints")
	if len(eps) > maxEndpointsPerSlice {
		errs = append(errs, field.TooMany(p, len(eps), maxEndpointsPerSlice))
	}
	for i, ep := range eps {
		ip := p.Index(i)
		switch n := len(ep.Addresses); {
		case n == 0:
			errs = append(errs, field.Required(ip.Child("addresses"), "at least one address"))
		case n > maxAddressesPerEp:
			errs = append(errs, field.TooMany(ip.Child("addresses"), n, maxAddressesPerEp))
		}
		for j, a := range ep.Addresses {
			if addr, err := netip.ParseAddr(a); err != nil || !addr.Is4() {
				errs = append(errs, field.Invalid(ip.Child("addresses").Index(j), a, "must be a valid IPv4 address"))
			}
		}
		if ep.Hostname != nil {
			for _, msg := range validation.IsDNS1123Label(*ep.Hostname) {
				errs = append(errs, field.Invalid(ip.Child("hostname"), *ep.Hostname, msg))
			}
		}
		if ep.NodeName != nil {
			for _, msg := range apivalidation.NameIsDNSSubdomain(*ep.NodeName, false) {
				errs = append(errs, field.Invalid(ip.Child("nodeName"), *ep.NodeName, msg))
			}
		}
	}
	return errs
}

var supportedSliceProtocols = []string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}

func validateSlicePorts(ports []discoveryv1.EndpointPort) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("ports")
	if len(ports) > maxPortsPerSlice {
		errs = append(errs, field.TooMany(p, len(ports), maxPortsPerSlice))
	}
	names := sets.New[string]()
	for i, port := range ports {
		ip := p.Index(i)
		if port.Name != nil && *port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(*port.Name) {
				errs = append(errs, field.Invalid(ip.Child("name"), *port.Name, msg))
			}
		}
		name := ""
		if port.Name != nil {
			name = *port.Name
		}
		if names.Has(name) {
			errs = append(errs, field.Duplicate(ip.Child("name"), name))
		}
		names.Insert(name)
		if port.Protocol == nil {
			errs = append(errs, field.Required(ip.Child("protocol"), "supported values: "+`"TCP", "UDP", "SCTP"`))
		} else if !sets.New(supportedSliceProtocols...).Has(string(*port.Protocol)) {
			errs = append(errs, field.NotSupported(ip.Child("protocol"), *port.Protocol, supportedSliceProtocols))
		}
		if port.Port != nil {
			for _, msg := range validation.IsValidPortNum(int(*port.Port)) {
				errs = append(errs, field.Invalid(ip.Child("port"), *port.Port, msg))
			}
		}
	}
	return errs
}
