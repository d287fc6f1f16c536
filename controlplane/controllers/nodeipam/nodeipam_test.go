package nodeipam

import (
	"errors"
	"testing"
)

func TestAllocatorLowestFreeNeverShared(t *testing.T) {
	a, err := NewAllocator("10.244.0.0/16", 24)
	if err != nil {
		t.Fatal(err)
	}
	// Held from before a restart: read back from the nodes' specs.
	if err := a.Occupy("node-b", "10.244.1.0/24"); err != nil {
		t.Fatal(err)
	}
	steps := []struct{ node, want string }{
		{"node-a", "10.244.0.0/24"},
		{"node-c", "10.244.2.0/24"},
		{"node-a", "10.244.0.0/24"}, // asked again: the same
	}
	for _, s := range steps {
		p, err := a.Allocate(s.node)
		if err != nil || p.String() != s.want {
			t.Fatalf("Allocate(%s) = %v, %v; want %s", s.node, p, err, s.want)
		}
	}
	if err := a.Occupy("node-d", "10.244.2.0/24"); err == nil {
		t.Fatal("Occupy gave node-d the CIDR node-c holds")
	}
	a.Release("node-a")
	if p, _ := a.Allocate("node-e"); p.String() != "10.244.0.0/24" {
		t.Fatalf("after node-a left, Allocate(node-e) = %s, want 10.244.0.0/24", p)
	}
}

func TestAllocatorFull(t *testing.T) {
	a, err := NewAllocator("10.244.0.0/23", 24)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := a.Allocate(n); err != nil {
			t.Fatalf("Allocate(%s): %v", n, err)
		}
	}
	if _, err := a.Allocate("c"); !errors.Is(err, ErrFull) {
		t.Fatalf("third Allocate in a /23 = %v, want ErrFull", err)
	}
}

func TestNewAllocatorRejects(t *testing.T) {
	for _, tt := range []struct {
		cidr string
		mask int
	}{{"10.244.0.0", 24}, {"10.244.0.0/16", 8}, {"10.244.0.0/16", 33}} {
		if _, err := NewAllocator(tt.cidr, tt.mask); err == nil {
			t.Errorf("NewAllocator(%q, %d) accepted", tt.cidr, tt.mask)
		}
	}
}
