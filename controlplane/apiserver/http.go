package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// Handler serves the API until ctx ends: the Kubernetes API through the
// generic API server (generic.go), and skep's own paths (join, renewal,
// the CA, metrics, and the streams to agents) beside it.
func (s *Server) Handler(ctx context.Context) (http.Handler, error) {
	kube, err := s.genericServer(ctx)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", kube)
	// Health is open to anyone, as kube-apiserver's is to anonymous
	// users.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.reg.store.Ping(r.Context()); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.Handle("/metrics", s.authenticated(func(w http.ResponseWriter, r *http.Request, id Identity) {
		if !id.Admin {
			writeError(w, refuseUnread(w, r, apierrors.NewForbidden(gr(api.MustLookup("nodes")), "metrics", errors.New("only the admin reads metrics"))))
			return
		}
		// skep's metrics and the generic server's (apiserver_*, the
		// watch cache's) in one answer.
		promhttp.HandlerFor(prometheus.Gatherers{s.metrics.reg, legacyregistry.DefaultGatherer}, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	}))
	mux.Handle("/skep/v1/join", s.authenticated(s.join))
	mux.Handle(client.RenewPath, s.authenticated(s.renew))
	mux.Handle(client.ServingCertificatePath, s.authenticated(s.servingCertificate))
	// The CA is public: an agent fetches it before it trusts the server and
	// checks it against the hash its join token carries, as k3s does.
	mux.HandleFunc("/cacerts", func(w http.ResponseWriter, r *http.Request) { w.Write(s.caPEM) })
	// Logs, exec and node proxy are skep's streams to agents (nodeaccess.go).
	access := s.authenticated(s.serveAccessPath)
	streams := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := parseAccessPath(r.URL.Path); ok {
			access.ServeHTTP(w, r)
			return
		}
		kube.ServeHTTP(w, r)
	})
	mux.Handle("/api/", streams)
	mux.Handle("/apis/", streams)
	return mux, nil
}

func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request, Identity)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.auth.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			writeError(w, refuseUnread(w, r, apierrors.NewUnauthorized("a valid bearer token is required")))
			return
		}
		h(w, r, id)
	})
}

// target is a parsed API path.
type target struct {
	resource  *api.Resource
	namespace string
	name      string
	status    bool
}

func parsePath(path string) (target, error) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var group, version string
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		version, rest = parts[1], parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group, version, rest = parts[1], parts[2], parts[3:]
	default:
		return target{}, fmt.Errorf("no API at %s", path)
	}
	var t target
	if len(rest) >= 3 && rest[0] == "namespaces" {
		t.namespace, rest = rest[1], rest[2:]
	}
	if len(rest) == 0 || len(rest) > 3 {
		return target{}, fmt.Errorf("no API at %s", path)
	}
	r, ok := api.ForPath(group, version, rest[0])
	if !ok {
		return target{}, fmt.Errorf("the server could not find the requested resource %q in %s", rest[0], strings.TrimPrefix(group+"/"+version, "/"))
	}
	t.resource = r
	if len(rest) >= 2 {
		t.name = rest[1]
	}
	if len(rest) == 3 {
		if rest[2] != "status" || !r.HasStatus {
			return target{}, fmt.Errorf("%s has no subresource %q", r.Name, rest[2])
		}
		t.status = true
	}
	if !r.Namespaced && t.namespace != "" {
		return target{}, fmt.Errorf("%s are not namespaced", r.Name)
	}
	return t, nil
}

// serveAccessPath serves logs, exec and node proxy.
func (s *Server) serveAccessPath(w http.ResponseWriter, r *http.Request, id Identity) {
	a, _ := parseAccessPath(r.URL.Path)
	// Logs, exec and node proxy stream for as long as they last: no
	// latency is observed for them, as for watches.
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		s.metrics.requests.WithLabelValues(strings.ToLower(r.Method), a.resource(), strconv.Itoa(rec.code)).Inc()
	}()
	if err := s.serveAccess(rec, r, id, a); err != nil {
		writeError(rec, refuseUnread(rec, r, err)) // refused before anything was proxied
	}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, id Identity) {
	start := time.Now()
	if a, ok := parseAccessPath(r.URL.Path); ok {
		// Logs, exec and node proxy stream for as long as they last: no
		// latency is observed for them, as for watches.
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			s.metrics.requests.WithLabelValues(strings.ToLower(r.Method), a.resource(), strconv.Itoa(rec.code)).Inc()
		}()
		if err := s.serveAccess(rec, r, id, a); err != nil {
			writeError(rec, refuseUnread(rec, r, err)) // refused before anything was proxied
		}
		return
	}
	t, err := parsePath(r.URL.Path)
	if err != nil {
		writeError(w, apierrors.NewNotFound(gr(&api.Resource{}), err.Error()))
		return
	}
	verb := verbOf(r, t)
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		s.metrics.requests.WithLabelValues(verb, t.resource.Name, strconv.Itoa(rec.code)).Inc()
		if verb != "watch" {
			s.metrics.latency.WithLabelValues(verb, t.resource.Name).Observe(time.Since(start).Seconds())
		}
	}()
	if err := s.admitRequest(rec, r, id, t, verb); err != nil {
		writeError(rec, err)
	}
}

// admitRequest is what every API request goes through before its handler,
// in kube-apiserver's order: the path is checked, the credential
// authorized on the URL and verb, a slot taken, and a deadline set; only
// then does the handler read a body or the store.
func (s *Server) admitRequest(w http.ResponseWriter, r *http.Request, id Identity, t target, verb string) error {
	if err := checkPathSegments(t); err != nil {
		return refuseUnread(w, r, err)
	}
	req := request{verb: verb, resource: t.resource, namespace: t.namespace, name: t.name, status: t.status, beforeBody: true}
	if err := authorize(id, req); err != nil {
		return refuseUnread(w, r, apierrors.NewForbidden(gr(t.resource), t.name, err))
	}
	if verb != "watch" {
		ctx, cancel := context.WithTimeout(r.Context(), s.admit.limits.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	release, err := s.admit.acquire(r.Context(), verb, id.String())
	if err != nil {
		return refuseUnread(w, r, err)
	}
	defer release()
	return s.handle(w, r, id, t, verb)
}

func verbOf(r *http.Request, t target) string {
	switch r.Method {
	case http.MethodGet:
		if t.name != "" {
			return "get"
		}
		if r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1" {
			return "watch"
		}
		return "list"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodDelete:
		return "delete"
	}
	return strings.ToLower(r.Method)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request, id Identity, t target, verb string) error {
	ctx := r.Context()
	q := r.URL.Query()
	req := request{verb: verb, resource: t.resource, namespace: t.namespace, name: t.name, status: t.status}
	deny := func(err error) error {
		return apierrors.NewForbidden(gr(t.resource), t.name, err)
	}
	switch verb {
	case "get":
		obj, err := s.reg.get(ctx, t.resource, t.namespace, t.name)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, obj)
	case "list":
		if rv := q.Get("resourceVersion"); rv != "" {
			if _, err := strconv.ParseUint(rv, 10, 64); err != nil {
				return apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q: must be a resourceVersion the server gave out (a number)", rv))
			}
		}
		objs, rev, err := s.reg.list(ctx, t.resource, t.namespace, listOptions(q))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, listOf(t.resource, objs, rev))
	case "watch":
		return s.serveWatch(w, r, t)
	case "create", "update":
		if t.name == "" && verb == "update" || t.name != "" && verb == "create" {
			return apierrors.NewMethodNotSupported(gr(t.resource), r.Method)
		}
		body, err := s.admit.readBody(w, r)
		if err != nil {
			return err
		}
		obj, err := decodeBody(t, body)
		if err != nil {
			return err
		}
		if verb == "update" {
			if obj.GetName() != t.name {
				return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", obj.GetName(), t.name))
			}
			old, err := s.reg.get(ctx, t.resource, t.namespace, t.name)
			if err != nil {
				return err
			}
			req.old, req.new = old, obj
		} else {
			req.name, req.new = obj.GetName(), obj
		}
		if err := authorize(id, req); err != nil {
			return deny(err)
		}
		dryRun, err := parseDryRun(q["dryRun"])
		if err != nil {
			return err
		}
		if verb == "create" {
			obj, err = s.reg.create(ctx, t.resource, obj, dryRun)
			if err != nil {
				return err
			}
			if !dryRun {
				s.log.Info("created", "resource", t.resource.Name, "object", obj.GetNamespace()+"/"+obj.GetName(), "by", id.String())
				if t.resource.Name == "nodes" {
					s.auth.nodeCreated(ctx, obj.GetName())
				}
			}
			writeJSON(w, http.StatusCreated, obj)
			return nil
		}
		obj, err = s.reg.update(ctx, t.resource, obj, t.status, dryRun)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, obj)
	case "delete":
		if t.name == "" {
			return apierrors.NewMethodNotSupported(gr(t.resource), "deletecollection")
		}
		opts, err := s.deleteOptions(w, r)
		if err != nil {
			return err
		}
		old, err := s.reg.get(ctx, t.resource, t.namespace, t.name)
		if err != nil {
			return err
		}
		req.old = old
		if err := authorize(id, req); err != nil {
			return deny(err)
		}
		if id.Node != "" {
			// A node was authorized for the pod it read (bound to it):
			// the delete must not reach another of that name created
			// since, bound elsewhere.
			opts.UID = old.GetUID()
		}
		obj, err := s.reg.delete(ctx, t.resource, t.namespace, t.name, opts)
		if err != nil {
			return err
		}
		if !opts.DryRun {
			s.log.Info("deleted", "resource", t.resource.Name, "object", t.namespace+"/"+t.name, "by", id.String())
		}
		writeJSON(w, http.StatusOK, obj)
	default:
		return apierrors.NewMethodNotSupported(gr(t.resource), r.Method)
	}
	return nil
}

// refuseUnread answers a request refused before its body was read on a
// connection that then closes: otherwise Go's server reads up to 256 KiB
// of the unread body to keep the connection, which a client trickling its
// body turns into a wait as long as it likes.
func refuseUnread(w http.ResponseWriter, r *http.Request, err error) error {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	return err
}

// decodeBody decodes strictly. Unknown fields and validation errors of the
// same object come back together, so one answer names every problem.
func decodeBody(t target, body []byte) (api.Object, error) {
	obj, err := api.DecodeInto(t.resource, body)
	if errors.Is(err, api.ErrTooLarge) {
		return nil, apierrors.NewRequestEntityTooLargeError(err.Error())
	}
	if obj == nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if t.resource.Namespaced {
		switch {
		case obj.GetNamespace() == "":
			obj.SetNamespace(t.namespace)
		case t.namespace != "" && obj.GetNamespace() != t.namespace:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the namespace of the object (%s) does not match the namespace on the URL (%s)", obj.GetNamespace(), t.namespace))
		}
	}
	if err == nil {
		return obj, nil
	}
	var unknown field.ErrorList
	var agg interface{ Errors() []error }
	if errors.As(err, &agg) {
		for _, e := range agg.Errors() {
			var fe *field.Error
			if errors.As(e, &fe) {
				unknown = append(unknown, fe)
			}
		}
	}
	check := obj.DeepCopyObject().(api.Object)
	if check.GetNamespace() == "" && t.resource.Namespaced {
		check.SetNamespace(api.DefaultNamespace)
	}
	api.Default(check)
	return nil, invalid(t.resource, obj.GetName(), append(unknown, api.Validate(t.resource, check)...))
}

func listOptions(q map[string][]string) client.ListOptions {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return client.ListOptions{LabelSelector: get("labelSelector"), FieldSelector: get("fieldSelector"), ResourceVersion: get("resourceVersion")}
}

func (s *Server) deleteOptions(w http.ResponseWriter, r *http.Request) (client.DeleteOptions, error) {
	var opts client.DeleteOptions
	var body metav1.DeleteOptions
	data, err := s.admit.readBody(w, r)
	if err != nil {
		return opts, err
	}
	if len(strings.TrimSpace(string(data))) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			return opts, apierrors.NewBadRequest("delete options: " + err.Error())
		}
		opts.GracePeriodSeconds = body.GracePeriodSeconds
		opts.PropagationPolicy = body.PropagationPolicy
		if body.Preconditions != nil && body.Preconditions.ResourceVersion != nil {
			opts.ResourceVersion = *body.Preconditions.ResourceVersion
		}
		if body.Preconditions != nil && body.Preconditions.UID != nil {
			opts.UID = *body.Preconditions.UID
		}
		dryRun, err := parseDryRun(body.DryRun)
		if err != nil {
			return opts, err
		}
		opts.DryRun = dryRun
	}
	// kubectl sends dryRun in the body; other clients put it in the query.
	// Either one makes the delete a dry run.
	dryRun, err := parseDryRun(r.URL.Query()["dryRun"])
	if err != nil {
		return opts, err
	}
	opts.DryRun = opts.DryRun || dryRun
	if g := r.URL.Query().Get("gracePeriodSeconds"); g != "" {
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil || n < 0 {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("gracePeriodSeconds %q: must be a number >= 0", g))
		}
		opts.GracePeriodSeconds = &n
	}
	if p := r.URL.Query().Get("propagationPolicy"); p != "" {
		pp := metav1.DeletionPropagation(p)
		opts.PropagationPolicy = &pp
	}
	if p := opts.PropagationPolicy; p != nil {
		switch *p {
		case metav1.DeletePropagationOrphan, metav1.DeletePropagationBackground, metav1.DeletePropagationForeground:
		default:
			return opts, apierrors.NewBadRequest(fmt.Sprintf("propagationPolicy: Unsupported value: %q: supported values: \"Foreground\", \"Background\", \"Orphan\"", *p))
		}
	}
	return opts, nil
}

// parseDryRun reads the dryRun option: absent, or "All", which Kubernetes
// defines as "check everything, persist nothing". Anything else is a 400,
// never a real write.
func parseDryRun(values []string) (bool, error) {
	for _, v := range values {
		if v != metav1.DryRunAll {
			return false, apierrors.NewBadRequest(fmt.Sprintf("dryRun: Unsupported value: %q: supported values: \"All\"", v))
		}
	}
	return len(values) > 0, nil
}

// watchEvent is one line of a watch stream, as Kubernetes writes it.
type watchEvent struct {
	Type   client.EventType `json:"type"`
	Object json.RawMessage  `json:"object"`
}

func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, t target) error {
	events, err := s.reg.watch(r.Context(), t.resource, t.namespace, listOptions(r.URL.Query()))
	if err != nil {
		return err
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for ev := range events {
		data, err := json.Marshal(ev.Object)
		if err != nil {
			continue
		}
		if err := enc.Encode(watchEvent{Type: ev.Type, Object: data}); err != nil {
			return nil
		}
		if flusher != nil && len(events) == 0 {
			flusher.Flush()
		}
	}
	return nil
}

// list is a Kubernetes list object.
type list struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   metav1.ListMeta `json:"metadata"`
	Items      []api.Object    `json:"items"`
}

func listOf(r *api.Resource, objs []api.Object, rev uint64) list {
	if objs == nil {
		objs = []api.Object{}
	}
	return list{APIVersion: r.APIVersion(), Kind: r.Kind + "List", Metadata: metav1.ListMeta{ResourceVersion: strconv.FormatUint(rev, 10)}, Items: objs}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.APIVersion, st.Kind = "v1", "Status"
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(st.Details.RetryAfterSeconds)))
	}
	writeJSON(w, int(st.Code), st)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection, to hijack it
// for an upgraded exec stream.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
