package apiserver

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"

	"github.com/skep-io/skep/controlplane/api"
)

// fullCoreEvent sets every field of a core/v1 Event to a distinct value.
func fullCoreEvent() *corev1.Event {
	t0 := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1.181d4f2a", Namespace: "default", UID: "uid-ev", ResourceVersion: "42",
			Labels: map[string]string{"l": "v"}, Annotations: map[string]string{"a": "b"},
			CreationTimestamp: metav1.NewTime(t0),
		},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-1", UID: "uid-pod",
			APIVersion: "v1", ResourceVersion: "7", FieldPath: "spec.containers{web}"},
		Reason:              "BackOff",
		Message:             "Back-off restarting failed container web",
		Source:              corev1.EventSource{Component: "kubelet", Host: "node-a"},
		FirstTimestamp:      metav1.NewTime(t0.Add(time.Second)),
		LastTimestamp:       metav1.NewTime(t0.Add(2 * time.Second)),
		Count:               3,
		Type:                corev1.EventTypeWarning,
		EventTime:           metav1.NewMicroTime(t0.Add(3 * time.Second)),
		Series:              &corev1.EventSeries{Count: 5, LastObservedTime: metav1.NewMicroTime(t0.Add(4 * time.Second))},
		Action:              "Restarting",
		Related:             &corev1.ObjectReference{Kind: "Node", Name: "node-a", APIVersion: "v1"},
		ReportingController: "kubelet",
		ReportingInstance:   "kubelet-node-a",
	}
}

// fullEventV1 sets every field of an events.k8s.io/v1 Event.
func fullEventV1() *eventsv1.Event {
	t0 := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "web-2.181d4f2b", Namespace: "prod", UID: "uid-ev2", ResourceVersion: "43",
			Labels: map[string]string{"k": "v"}},
		EventTime:                metav1.NewMicroTime(t0),
		Series:                   &eventsv1.EventSeries{Count: 2, LastObservedTime: metav1.NewMicroTime(t0.Add(time.Minute))},
		ReportingController:      "skep.io/scheduler",
		ReportingInstance:        "skep-scheduler-1",
		Action:                   "Binding",
		Reason:                   "Scheduled",
		Regarding:                corev1.ObjectReference{Kind: "Pod", Namespace: "prod", Name: "web-2", UID: "uid-p2", APIVersion: "v1", ResourceVersion: "9", FieldPath: "spec"},
		Related:                  &corev1.ObjectReference{Kind: "Node", Name: "node-b", APIVersion: "v1"},
		Note:                     "Successfully assigned prod/web-2 to node-b",
		Type:                     corev1.EventTypeNormal,
		DeprecatedSource:         corev1.EventSource{Component: "default-scheduler", Host: "cp-1"},
		DeprecatedFirstTimestamp: metav1.NewTime(t0.Add(-time.Hour)),
		DeprecatedLastTimestamp:  metav1.NewTime(t0.Add(-time.Minute)),
		DeprecatedCount:          4,
	}
}

// unsetFields names the fields of a struct left at their zero value, but
// TypeMeta (the kind is the Go type's, set when encoded): a field one
// conversion forgets, including one a newer k8s.io/api adds, shows here.
func unsetFields(obj any) []string {
	v := reflect.ValueOf(obj).Elem()
	var unset []string
	for i := range v.NumField() {
		if name := v.Type().Field(i).Name; name != "TypeMeta" && v.Field(i).IsZero() {
			unset = append(unset, name)
		}
	}
	return unset
}

func TestEventConversionRoundTrips(t *testing.T) {
	core := fullCoreEvent()
	if unset := unsetFields(core); len(unset) > 0 {
		t.Fatalf("the test's core Event leaves %v unset; set every field", unset)
	}
	v1 := eventV1FromCore(core)
	if unset := unsetFields(v1); len(unset) > 0 {
		t.Errorf("core/v1 -> events.k8s.io/v1 leaves %v unset", unset)
	}
	if back := eventCoreFromV1(v1); !apiequality.Semantic.DeepEqual(core, back) {
		t.Errorf("core/v1 -> events.k8s.io/v1 -> core/v1 changed the Event:\n%s", diff.Diff(core, back))
	}

	v1 = fullEventV1()
	if unset := unsetFields(v1); len(unset) > 0 {
		t.Fatalf("the test's events.k8s.io/v1 Event leaves %v unset; set every field", unset)
	}
	core = eventCoreFromV1(v1)
	if unset := unsetFields(core); len(unset) > 0 {
		t.Errorf("events.k8s.io/v1 -> core/v1 leaves %v unset", unset)
	}
	if back := eventV1FromCore(core); !apiequality.Semantic.DeepEqual(v1, back) {
		t.Errorf("events.k8s.io/v1 -> core/v1 -> events.k8s.io/v1 changed the Event:\n%s", diff.Diff(v1, back))
	}
}

// TestEventConversionFields checks each field against its counterpart, as
// Kubernetes maps them (pkg/apis/events/v1 and the core Event).
func TestEventConversionFields(t *testing.T) {
	core := fullCoreEvent()
	v1 := eventV1FromCore(core)
	fromV1 := eventCoreFromV1(fullEventV1())
	v1Src := fullEventV1()
	for _, tc := range []struct {
		field            string
		core, v1         any // core -> v1
		coreBack, v1Sent any // v1 -> core
	}{
		{"metadata", core.ObjectMeta, v1.ObjectMeta, fromV1.ObjectMeta, v1Src.ObjectMeta},
		{"involvedObject/regarding", core.InvolvedObject, v1.Regarding, fromV1.InvolvedObject, v1Src.Regarding},
		{"message/note", core.Message, v1.Note, fromV1.Message, v1Src.Note},
		{"source/deprecatedSource", core.Source, v1.DeprecatedSource, fromV1.Source, v1Src.DeprecatedSource},
		{"firstTimestamp/deprecatedFirstTimestamp", core.FirstTimestamp, v1.DeprecatedFirstTimestamp, fromV1.FirstTimestamp, v1Src.DeprecatedFirstTimestamp},
		{"lastTimestamp/deprecatedLastTimestamp", core.LastTimestamp, v1.DeprecatedLastTimestamp, fromV1.LastTimestamp, v1Src.DeprecatedLastTimestamp},
		{"count/deprecatedCount", core.Count, v1.DeprecatedCount, fromV1.Count, v1Src.DeprecatedCount},
		{"reportingController", core.ReportingController, v1.ReportingController, fromV1.ReportingController, v1Src.ReportingController},
		{"reportingInstance", core.ReportingInstance, v1.ReportingInstance, fromV1.ReportingInstance, v1Src.ReportingInstance},
		{"action", core.Action, v1.Action, fromV1.Action, v1Src.Action},
		{"reason", core.Reason, v1.Reason, fromV1.Reason, v1Src.Reason},
		{"related", core.Related, v1.Related, fromV1.Related, v1Src.Related},
		{"series.count", core.Series.Count, v1.Series.Count, fromV1.Series.Count, v1Src.Series.Count},
		{"series.lastObservedTime", core.Series.LastObservedTime, v1.Series.LastObservedTime, fromV1.Series.LastObservedTime, v1Src.Series.LastObservedTime},
		{"eventTime", core.EventTime, v1.EventTime, fromV1.EventTime, v1Src.EventTime},
		{"type", core.Type, v1.Type, fromV1.Type, v1Src.Type},
	} {
		t.Run(tc.field, func(t *testing.T) {
			if !apiequality.Semantic.DeepEqual(tc.core, tc.v1) {
				t.Errorf("core/v1 %v became events.k8s.io/v1 %v", tc.core, tc.v1)
			}
			if !apiequality.Semantic.DeepEqual(tc.v1Sent, tc.coreBack) {
				t.Errorf("events.k8s.io/v1 %v became core/v1 %v", tc.v1Sent, tc.coreBack)
			}
		})
	}
}

// TestEventConversionSharesNothing: the view must not alias the stored
// object, which the watch cache hands to every reader.
func TestEventConversionSharesNothing(t *testing.T) {
	core := fullCoreEvent()
	v1 := eventV1FromCore(core)
	v1.Related.Name, v1.Series.Count, v1.Labels["l"] = "changed", 99, "changed"
	if core.Related.Name != "node-a" || core.Series.Count != 5 || core.Labels["l"] != "v" {
		t.Errorf("changing the events.k8s.io/v1 view changed the core Event: %+v", core)
	}
	src := fullEventV1()
	back := eventCoreFromV1(src)
	back.Related.Name, back.Series.Count = "changed", 99
	if src.Related.Name != "node-b" || src.Series.Count != 2 {
		t.Errorf("changing the core/v1 form changed the events.k8s.io/v1 Event: %+v", src)
	}
}

func TestEventsV1FieldLabels(t *testing.T) {
	scheme, _, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	gvk := eventsv1.SchemeGroupVersion.WithKind("Event")
	for label, want := range map[string]string{
		"regarding.name": "involvedObject.name", "regarding.kind": "involvedObject.kind",
		"regarding.namespace": "involvedObject.namespace", "regarding.uid": "involvedObject.uid",
		"regarding.apiVersion": "involvedObject.apiVersion", "regarding.fieldPath": "involvedObject.fieldPath",
		"regarding.resourceVersion": "involvedObject.resourceVersion",
		"reportingController":       "reportingComponent", "reason": "reason", "type": "type", "source": "source",
		"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace",
	} {
		got, _, err := scheme.ConvertFieldLabel(gvk, label, "x")
		if err != nil || got != want {
			t.Errorf("events.k8s.io/v1 field selector %q: %q, %v; want %q", label, got, err, want)
			continue
		}
		// What it maps to is a field the core Events select on.
		if _, ok := fieldValue(api.MustLookup("events"), nil, got); !ok {
			t.Errorf("%q maps to %q, which core Events do not select on", label, got)
		}
	}
	for _, label := range []string{"involvedObject.name", "note", "message", "reportingComponent"} {
		if _, _, err := scheme.ConvertFieldLabel(gvk, label, "x"); err == nil {
			t.Errorf("events.k8s.io/v1 field selector %q accepted; kube-apiserver refuses it", label)
		}
	}
}
