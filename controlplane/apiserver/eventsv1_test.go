package apiserver_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

const (
	coreEvents   = "/api/v1/namespaces/default/events"
	eventsV1Path = "/apis/events.k8s.io/v1/namespaces/default/events"
)

// eventV1JSON is an Event as the events.k8s.io/v1 recorder (client-go's
// tools/events) writes one: eventTime, reporting controller and instance,
// action and note, no deprecated fields.
const eventV1JSON = `{"apiVersion":"events.k8s.io/v1","kind":"Event",
 "metadata":{"name":"web-1.aaa","namespace":"default"},
 "eventTime":"2026-12-02T14:00:00.000000Z","reportingController":"skep.io/scheduler","reportingInstance":"cp-1",
 "action":"Binding","reason":"Scheduled","type":"Normal",
 "regarding":{"kind":"Pod","namespace":"default","name":"web-1","apiVersion":"v1"},
 "related":{"kind":"Node","name":"node-a","apiVersion":"v1"},
 "note":"Successfully assigned default/web-1 to node-a"}`

func decode[T any](t *testing.T, what, body string) *T {
	t.Helper()
	out := new(T)
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("%s: %v in %s", what, err, body)
	}
	return out
}

// TestEventsV1IsACoreEventView: an Event written through events.k8s.io/v1
// is the core/v1 Event with the fields renamed, and the other way round.
func TestEventsV1IsACoreEventView(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	admin := s.AdminToken

	code, body, _ := c.do(http.MethodPost, eventsV1Path, admin, "application/json", strings.NewReader(eventV1JSON))
	if code != http.StatusCreated {
		t.Fatalf("create through events.k8s.io/v1: %d %s", code, body)
	}
	created := decode[eventsv1.Event](t, "created", body)
	if created.APIVersion != "events.k8s.io/v1" || created.Note != "Successfully assigned default/web-1 to node-a" || created.Regarding.Name != "web-1" {
		t.Errorf("create through events.k8s.io/v1 answered %s; want the events.k8s.io/v1 Event", body)
	}

	code, body, _ = c.do(http.MethodGet, coreEvents+"/web-1.aaa", admin, "", nil)
	core := decode[corev1.Event](t, "core get", body)
	if code != http.StatusOK || core.APIVersion != "v1" || core.Message != created.Note || core.InvolvedObject.Name != "web-1" ||
		core.InvolvedObject.Kind != "Pod" || core.ReportingController != "skep.io/scheduler" || core.ReportingInstance != "cp-1" ||
		core.Action != "Binding" || core.Related == nil || core.Related.Name != "node-a" || core.EventTime.IsZero() ||
		core.ResourceVersion != created.ResourceVersion || core.UID != created.UID {
		t.Errorf("the Event read as core/v1: %d %s; want message, involvedObject, reporting*, action, related and eventTime from the events.k8s.io/v1 write", code, body)
	}

	// A core/v1 client counts a repeat; the events.k8s.io/v1 view shows
	// it in the deprecated fields.
	code, body, _ = c.do(http.MethodPatch, coreEvents+"/web-1.aaa", admin, "application/merge-patch+json",
		strings.NewReader(`{"count":2,"source":{"component":"default-scheduler"},"message":"again"}`))
	if code != http.StatusOK {
		t.Fatalf("patch as core/v1: %d %s", code, body)
	}
	code, body, _ = c.do(http.MethodGet, eventsV1Path+"/web-1.aaa", admin, "", nil)
	v1 := decode[eventsv1.Event](t, "events.k8s.io get", body)
	if code != http.StatusOK || v1.DeprecatedCount != 2 || v1.DeprecatedSource.Component != "default-scheduler" || v1.Note != "again" || v1.Regarding.Name != "web-1" {
		t.Errorf("the Event read back as events.k8s.io/v1: %d %s; want deprecatedCount 2, deprecatedSource and note from the core write", code, body)
	}

	// A patch through events.k8s.io/v1 applies to its field names (the
	// series the new recorder keeps), and a PUT replaces the Event.
	code, body, _ = c.do(http.MethodPatch, eventsV1Path+"/web-1.aaa", admin, "application/merge-patch+json",
		strings.NewReader(`{"series":{"count":3,"lastObservedTime":"2026-12-02T14:05:00.000000Z"},"note":"third"}`))
	v1 = decode[eventsv1.Event](t, "events.k8s.io patch", body)
	if code != http.StatusOK || v1.Series == nil || v1.Series.Count != 3 || v1.Note != "third" || v1.DeprecatedCount != 2 {
		t.Errorf("merge patch through events.k8s.io/v1: %d %s; want series 3, note third, the rest kept", code, body)
	}
	v1.Note = "fourth"
	put, _ := json.Marshal(v1)
	if code, body, _ = c.do(http.MethodPut, eventsV1Path+"/web-1.aaa", admin, "application/json", strings.NewReader(string(put))); code != http.StatusOK {
		t.Errorf("PUT through events.k8s.io/v1: %d %s", code, body)
	}
	_, body, _ = c.do(http.MethodGet, coreEvents+"/web-1.aaa", admin, "", nil)
	core = decode[corev1.Event](t, "core get after v1 writes", body)
	if core.Series == nil || core.Series.Count != 3 || core.Message != "fourth" {
		t.Errorf("core/v1 after the events.k8s.io/v1 patch and PUT: %s; want series 3 and message fourth", body)
	}
	// Server-side apply through events.k8s.io/v1 names its fields.
	apply := `{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"web-1.aaa"},"eventTime":"2026-12-02T14:00:00.000000Z","reportingController":"skep.io/scheduler","reportingInstance":"cp-1","action":"Binding","note":"applied"}`
	code, body, _ = c.do(http.MethodPatch, eventsV1Path+"/web-1.aaa?fieldManager=t&force=true", admin, "application/apply-patch+yaml", strings.NewReader(apply))
	if code != http.StatusOK || !strings.Contains(body, `"note":"applied"`) || !strings.Contains(body, `"f:note"`) {
		t.Errorf("server-side apply through events.k8s.io/v1: %d %s; want note applied and t managing f:note", code, body)
	}

	// Field selectors use the events.k8s.io names, as kube-apiserver's.
	other := strings.NewReplacer(`"web-1.aaa"`, `"web-2.bbb"`, `"name":"web-1"`, `"name":"web-2"`).Replace(eventV1JSON)
	if code, body, _ := c.do(http.MethodPost, eventsV1Path, admin, "application/json", strings.NewReader(other)); code != http.StatusCreated {
		t.Fatalf("create a second Event: %d %s", code, body)
	}
	code, body, _ = c.do(http.MethodGet, eventsV1Path+"?fieldSelector=regarding.name%3Dweb-2,regarding.kind%3DPod", admin, "", nil)
	list := decode[eventsv1.EventList](t, "selected list", body)
	if code != http.StatusOK || list.APIVersion != "events.k8s.io/v1" || list.Kind != "EventList" || len(list.Items) != 1 || list.Items[0].Name != "web-2.bbb" {
		t.Errorf("list regarding.name=web-2: %d %s; want the EventList of web-2.bbb only", code, body)
	}
	code, body, _ = c.do(http.MethodGet, eventsV1Path+"?fieldSelector=involvedObject.name%3Dweb-2", admin, "", nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "involvedObject.name") || !strings.Contains(body, "regarding.name") {
		t.Errorf("list involvedObject.name=web-2 on events.k8s.io/v1: %d %s; want 400 naming the field and the supported ones", code, body)
	}

	code, body, _ = c.do(http.MethodDelete, eventsV1Path+"/web-2.bbb", admin, "", nil)
	if code != http.StatusOK {
		t.Errorf("delete through events.k8s.io/v1: %d %s", code, body)
	}
	if code, body, _ := c.do(http.MethodGet, coreEvents+"/web-2.bbb", admin, "", nil); code != http.StatusNotFound {
		t.Errorf("core/v1 get of the Event deleted through events.k8s.io/v1: %d %s; want 404", code, body)
	}
	code, body, _ = c.do(http.MethodDelete, eventsV1Path, admin, "", nil)
	if l := decode[eventsv1.EventList](t, "deletecollection", body); code != http.StatusOK || l.Kind != "EventList" || len(l.Items) != 1 {
		t.Errorf("deletecollection through events.k8s.io/v1: %d %s; want the events.k8s.io/v1 list of the one deleted", code, body)
	}
	if _, body, _ := c.do(http.MethodGet, coreEvents, admin, "", nil); strings.Contains(body, "web-1.aaa") {
		t.Errorf("core/v1 list after deletecollection: %s; want no Events", body)
	}
}

// TestEventsV1Watch: a watch on events.k8s.io/v1 sees an Event written
// through core/v1, in its events.k8s.io/v1 form, and an informer's watch
// (initial events, then the bookmark ending them) gets them in that form
// too.
func TestEventsV1Watch(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	_, body, _ := c.do(http.MethodGet, eventsV1Path, s.AdminToken, "", nil)
	rv := decode[eventsv1.EventList](t, "list", body).ResourceVersion
	next := openWatch(t, c, s.AdminToken, eventsV1Path+"?watch=1&resourceVersion="+rv)

	now := metav1.NewTime(time.Now().Truncate(time.Second))
	ev := corev1.Event{
		TypeMeta:       metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta:     metav1.ObjectMeta{Name: "web-1.ccc", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-1", APIVersion: "v1"},
		Reason:         "Pulled", Message: "Container image already present", Type: corev1.EventTypeNormal,
		Source: corev1.EventSource{Component: "kubelet", Host: "node-a"}, Count: 1, FirstTimestamp: now, LastTimestamp: now,
	}
	data, _ := json.Marshal(ev)
	if code, body, _ := c.do(http.MethodPost, coreEvents, s.AdminToken, "application/json", strings.NewReader(string(data))); code != http.StatusCreated {
		t.Fatalf("create through core/v1: %d %s", code, body)
	}
	isOurs := func(we watchEventV1) bool {
		return we.Object.APIVersion == "events.k8s.io/v1" && we.Object.Name == "web-1.ccc" && we.Object.Note == ev.Message &&
			we.Object.Regarding.Name == "web-1" && we.Object.DeprecatedSource.Host == "node-a" && we.Object.DeprecatedCount == 1
	}
	if we, line := next(); we.Type != "ADDED" || !isOurs(we) {
		t.Errorf("watch event: %s; want ADDED of the events.k8s.io/v1 form of web-1.ccc", line)
	}

	next = openWatch(t, c, s.AdminToken, eventsV1Path+"?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
	if we, line := next(); we.Type != "ADDED" || !isOurs(we) {
		t.Errorf("informer watch, initial event: %s; want ADDED of the events.k8s.io/v1 form of web-1.ccc", line)
	}
	if we, line := next(); we.Type != "BOOKMARK" || we.Object.APIVersion != "events.k8s.io/v1" || we.Object.Kind != "Event" ||
		we.Object.Annotations["k8s.io/initial-events-end"] != "true" || we.Object.ResourceVersion == "" {
		t.Errorf("informer watch after the initial events: %s; want the events.k8s.io/v1 bookmark marking their end", line)
	}
}

type watchEventV1 struct {
	Type   string
	Object eventsv1.Event
}

// openWatch starts a watch and returns a function reading its next event,
// failing the test if none comes within 10s.
func openWatch(t *testing.T, c *rawClient, token, path string) func() (watchEventV1, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, c.s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch %s: %d %s", path, resp.StatusCode, b)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReader(resp.Body)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case lines <- line:
			case <-t.Context().Done():
				return
			}
		}
	}()
	return func() (watchEventV1, string) {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("watch %s ended", path)
			}
			var we watchEventV1
			if err := json.Unmarshal([]byte(line), &we); err != nil {
				t.Fatalf("watch %s: %v in %s", path, err, line)
			}
			return we, line
		case <-time.After(10 * time.Second):
			t.Fatalf("watch %s: no event within 10s", path)
		}
		return watchEventV1{}, ""
	}
}

// TestEventsV1Table: `kubectl get events.events.k8s.io` prints the core
// Events' columns, as kube-apiserver does for both groups.
func TestEventsV1Table(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	if code, body, _ := c.do(http.MethodPost, eventsV1Path, s.AdminToken, "application/json", strings.NewReader(eventV1JSON)); code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+eventsV1Path+"?includeObject=Object", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminToken)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	table := decode[metav1.Table](t, "table", string(b))
	var cols []string
	for _, col := range table.ColumnDefinitions {
		cols = append(cols, col.Name)
	}
	wantCols := "Last Seen,Type,Reason,Object,Subobject,Source,Message,First Seen,Count,Name"
	if resp.StatusCode != http.StatusOK || strings.Join(cols, ",") != wantCols || len(table.Rows) != 1 {
		t.Fatalf("table of events.k8s.io/v1 events: %d %s; want one row under %s", resp.StatusCode, b, wantCols)
	}
	cells := table.Rows[0].Cells
	if cells[1] != "Normal" || cells[2] != "Scheduled" || cells[3] != "pod/web-1" || cells[5] != "skep.io/scheduler, cp-1" ||
		cells[6] != "Successfully assigned default/web-1 to node-a" || cells[9] != "web-1.aaa" {
		t.Errorf("row: %v; want type, reason, pod/web-1, the reporting controller and instance as source, the note, the name", cells)
	}
	if obj := string(table.Rows[0].Object.Raw); !strings.Contains(obj, `"apiVersion":"events.k8s.io/v1"`) || !strings.Contains(obj, `"note":`) {
		t.Errorf("row object with includeObject=Object: %s; want the events.k8s.io/v1 Event", obj)
	}
}

// TestEventsV1Discovery: the group is served at v1 with every verb and,
// as kube-apiserver serves it, the core Events' short name.
func TestEventsV1Discovery(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	code, body, _ := c.do(http.MethodGet, "/apis/events.k8s.io/v1", s.AdminToken, "", nil)
	list := decode[metav1.APIResourceList](t, "discovery", body)
	if code != http.StatusOK || len(list.APIResources) != 1 {
		t.Fatalf("GET /apis/events.k8s.io/v1: %d %s; want the events resource", code, body)
	}
	r := list.APIResources[0]
	verbs := strings.Join(r.Verbs, ",")
	if r.Name != "events" || r.Kind != "Event" || !r.Namespaced || strings.Join(r.ShortNames, ",") != "ev" || r.SingularName != "event" ||
		verbs != "create,delete,deletecollection,get,list,patch,update,watch" {
		t.Errorf("events.k8s.io/v1 events in discovery: %+v; want namespaced Event, short name ev, all eight verbs", r)
	}
}

// TestNodeWritesEventsV1: an agent may do to events.k8s.io/v1 Events what
// it may do to core ones (create them, update and patch them) and nothing
// else; the admin may do everything (TestEventsV1IsACoreEventView).
func TestNodeWritesEventsV1(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	node := joinNodeRaw(t, c, s, "node-a")
	body := strings.Replace(eventV1JSON, `"reportingInstance":"cp-1"`, `"reportingInstance":"node-a"`, 1)
	if code, out, _ := c.do(http.MethodPost, eventsV1Path, node, "application/json", strings.NewReader(body)); code != http.StatusCreated {
		t.Fatalf("node creates an events.k8s.io/v1 Event: %d %s; want 201", code, out)
	}
	if code, out, _ := c.do(http.MethodPatch, eventsV1Path+"/web-1.aaa", node, "application/merge-patch+json",
		strings.NewReader(`{"series":{"count":2,"lastObservedTime":"2026-12-02T14:01:00.000000Z"}}`)); code != http.StatusOK {
		t.Errorf("node patches its Event's series: %d %s; want 200", code, out)
	}
	_, out, _ := c.do(http.MethodGet, coreEvents+"/web-1.aaa", s.AdminToken, "", nil)
	if ev := decode[corev1.Event](t, "core get", out); ev.Series == nil || ev.Series.Count != 2 {
		t.Errorf("the Event after the node's patch: %s; want series count 2", out)
	}
	for _, tc := range []struct{ what, method, path string }{
		{"get", http.MethodGet, eventsV1Path + "/web-1.aaa"},
		{"list", http.MethodGet, eventsV1Path},
		{"list in every namespace", http.MethodGet, "/apis/events.k8s.io/v1/events"},
		{"watch", http.MethodGet, eventsV1Path + "?watch=1"},
		{"delete", http.MethodDelete, eventsV1Path + "/web-1.aaa"},
		{"deletecollection", http.MethodDelete, eventsV1Path},
	} {
		if code, out, _ := c.do(tc.method, tc.path, node, "", nil); code != http.StatusForbidden {
			t.Errorf("node may %s events.k8s.io/v1 Events: %d %s; want 403", tc.what, code, out)
		}
	}
	if code, out, _ := c.do(http.MethodGet, coreEvents+"/web-1.aaa", s.AdminToken, "", nil); code != http.StatusOK {
		t.Errorf("the Event after the node's refused delete: %d %s; want it still there", code, out)
	}
	// kubectl auth can-i gets the same answers.
	for verb, want := range map[string]bool{"create": true, "patch": true, "update": true, "get": false, "list": false, "delete": false} {
		review := `{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"` + verb +
			`","group":"events.k8s.io","resource":"events","namespace":"default"}}}`
		code, out, _ := c.do(http.MethodPost, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", node, "application/json", strings.NewReader(review))
		if code != http.StatusCreated || strings.Contains(out, `"allowed":true`) != want {
			t.Errorf("can node-a %s events.events.k8s.io: %d %s; want allowed %v", verb, code, out, want)
		}
	}
}
