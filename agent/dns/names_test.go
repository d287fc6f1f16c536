package dns

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestResolvConf(t *testing.T) {
	tests := []struct {
		nameserver, namespace, domain string
		want                          string
	}{
		{"10.244.1.1", "default", "", "nameserver 10.244.1.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"},
		{"10.244.1.1:53", "shop", "corp.example.", "nameserver 10.244.1.1\nsearch shop.svc.corp.example svc.corp.example corp.example\noptions ndots:5\n"},
		{"fd00::1", "", "cluster.local", "nameserver fd00::1\nsearch svc.cluster.local cluster.local\noptions ndots:5\n"},
	}
	for _, tc := range tests {
		if got := string(ResolvConf(tc.nameserver, tc.namespace, tc.domain)); got != tc.want {
			t.Errorf("ResolvConf(%q, %q, %q) =\n%s\nwant\n%s", tc.nameserver, tc.namespace, tc.domain, got, tc.want)
		}
	}
}

func TestName(t *testing.T) {
	tests := []struct {
		svc    *corev1.Service
		domain string
		want   string
	}{
		{clusterIPService("shop", "web", "10.96.0.1"), "", "web.shop.svc.cluster.local"},
		{clusterIPService("", "web", "10.96.0.1"), "", "web.default.svc.cluster.local"},
		{clusterIPService("shop", "web", "10.96.0.1"), "corp.example.", "web.shop.svc.corp.example"},
	}
	for _, tc := range tests {
		if got := Name(tc.svc, tc.domain); got != tc.want {
			t.Errorf("Name(%s/%s, %q) = %q, want %q", tc.svc.Namespace, tc.svc.Name, tc.domain, got, tc.want)
		}
	}
}
