package eventttl_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/eventttl"
)

// TestSweepDeletesExpiredEvents writes Events of several ages, moves the
// controller's clock two hours on, and checks that a sweep deletes
// exactly those last written more than an hour before.
func TestSweepDeletesExpiredEvents(t *testing.T) {
	c := apiservertest.Start(t)
	ctx := t.Context()
	events := api.MustLookup("events")
	written := time.Now() // the server stamps creationTimestamp with its own clock
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(written.Add(d)) }
	cases := []struct {
		name        string
		first, last metav1.Time
		eventTime   time.Duration // new-style; 0: none
		keep        bool
	}{
		{name: "old", first: at(-3 * time.Hour), last: at(-10 * time.Minute)},
		{name: "repeated-lately", first: at(-3 * time.Hour), last: at(90 * time.Minute), keep: true},
		{name: "just-expired", first: at(59 * time.Minute), last: at(59 * time.Minute)},
		{name: "not-yet", first: at(61 * time.Minute), last: at(61 * time.Minute), keep: true},
		{name: "new-style-recent", eventTime: 100 * time.Minute, keep: true},
	}
	for _, tc := range cases {
		e := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "web." + tc.name, Namespace: "default"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web"},
			Reason:         "Pulled", Type: corev1.EventTypeNormal, FirstTimestamp: tc.first, LastTimestamp: tc.last,
		}
		if tc.eventTime != 0 {
			e.EventTime = metav1.NewMicroTime(written.Add(tc.eventTime))
			e.ReportingController, e.ReportingInstance, e.Action = "kubelet", "node-1", "Pulling"
		}
		if _, err := c.Create(ctx, events, e); err != nil {
			t.Fatal(err)
		}
	}

	now := written.Add(2 * time.Hour)
	ec := eventttl.New(c, eventttl.Config{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	n, err := ec.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	objs, _, err := c.List(ctx, events, "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, o := range objs {
		got = append(got, o.GetName())
	}
	for _, tc := range cases {
		if tc.keep {
			want = append(want, "web."+tc.name)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || n != len(cases)-len(want) {
		t.Errorf("two hours on, a sweep deleted %d and left %v; want %v left (the rest last written over an hour before)", n, got, want)
	}
}

// TestRunSweepsPeriodically checks the controller sweeps on its own.
func TestRunSweepsPeriodically(t *testing.T) {
	c := apiservertest.Start(t)
	events := api.MustLookup("events")
	old := metav1.NewTime(time.Now().Add(-2 * time.Hour))
	e := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "web.old", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web"}, Reason: "Pulled", FirstTimestamp: old, LastTimestamp: old}
	if _, err := c.Create(t.Context(), events, e); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(61 * time.Minute)
	ec := eventttl.New(c, eventttl.Config{Period: 20 * time.Millisecond, Now: func() time.Time { return later }}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for {
		objs, _, err := c.List(t.Context(), events, "", client.ListOptions{})
		if err == nil && len(objs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the expired event is still there after 5s of sweeps every 20ms: %v %v", objs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
