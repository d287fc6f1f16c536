package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
	apimachineryversion "k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/names"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/compatibility"
	"k8s.io/klog/v2"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/kubeapi/openapi"
	"github.com/skep-io/skep/controlplane/kubeapi/printers"
	kubestorage "github.com/skep-io/skep/controlplane/kubeapi/storage"
	"github.com/skep-io/skep/controlplane/store"
)

// KubernetesVersion is the Kubernetes API version skep serves: that of
// the k8s.io/api types it is built with.
const KubernetesVersion = "1.37.2"

// genericServer builds k8s.io/apiserver's generic API server over skep's
// registry: the Kubernetes API protocol (discovery, OpenAPI, every verb
// and patch type, server-side apply, protobuf, Tables, list and watch
// semantics) is the machinery's, and what the objects mean is skep's.
// It runs until ctx ends.
func (s *Server) genericServer(ctx context.Context) (http.Handler, error) {
	st := s.reg.store
	klog.SetSlogLogger(slog.New(klogAtWarn{s.log.Handler()}))
	if err := kubestorage.SeedRevision(ctx, st); err != nil {
		return nil, err
	}
	kubestorage.StoreAsProgressCapable(ctx)
	scheme, codecs, err := newScheme()
	if err != nil {
		return nil, err
	}
	gc := genericapiserver.NewConfig(codecs)
	gc.EffectiveVersion = kubeVersion{compatibility.NewEffectiveVersionFromString(KubernetesVersion, "", "")}
	gc.ExternalAddress = s.externalAddress
	// The generic server wants a client of itself for its post-start
	// hooks; skep runs none that use it, so it is never dialled.
	gc.LoopbackClientConfig = &restclient.Config{Host: "https://" + s.externalAddress, BearerToken: string(uuid.NewUUID())}
	gc.Authentication.Authenticator = s.requestAuthenticator()
	gc.Authorization.Authorizer = requestAuthorizer()
	// skep's own limits (limits.go) take a slot after authorization, so
	// an unauthorized client cannot fill the server; the generic ones,
	// which count before it, are off.
	gc.MaxRequestsInFlight, gc.MaxMutatingRequestsInFlight = 0, 0
	gc.RequestTimeout = s.admit.limits.RequestTimeout
	// Watches and the streams to agents last as long as they last: no
	// request timeout, as kube-apiserver's (its server.go).
	gc.LongRunningFunc = genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch", "proxy"), streamSubresources)
	gc.EnableProfiling = false
	gc.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
		return genericapiserver.DefaultBuildHandlerChain(s.withLimits(apiHandler, codecs), c)
	}
	namer := openapinamer.NewDefinitionNamer(scheme)
	gc.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	gc.OpenAPIConfig.Info.Title, gc.OpenAPIConfig.Info.Version = "Kubernetes (skep)", "v"+KubernetesVersion
	gc.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	gc.OpenAPIV3Config.Info.Title, gc.OpenAPIV3Config.Info.Version = "Kubernetes (skep)", "v"+KubernetesVersion

	srv, err := gc.Complete(nil).New("skep", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("generic API server: %w", err)
	}
	if err := s.installGroups(srv, st, scheme, codecs); err != nil {
		srv.Destroy()
		return nil, err
	}
	srv.PrepareRun()
	srv.RunPostStartHooks(ctx)
	go func() {
		<-ctx.Done()
		srv.Destroy()
	}()
	return srv.Handler, nil
}

// installGroups serves every resource of api.All() in its group.
func (s *Server) installGroups(srv *genericapiserver.GenericAPIServer, st *store.Store, scheme *runtime.Scheme, codecs serializer.CodecFactory) error {
	infos := map[string]*genericapiserver.APIGroupInfo{}
	var order []string
	for _, r := range api.All() {
		info := infos[r.Group]
		if info == nil {
			i := genericapiserver.NewDefaultAPIGroupInfo(r.Group, scheme, runtime.NewParameterCodec(scheme), codecs)
			info = &i
			infos[r.Group] = info
			order = append(order, r.Group)
		}
		rr, err := s.newResourceREST(r, st, scheme, codecs)
		if err != nil {
			return err
		}
		m := info.VersionedResourcesStorageMap[r.Version]
		if m == nil {
			m = map[string]rest.Storage{}
			info.VersionedResourcesStorageMap[r.Version] = m
		}
		m[r.Name] = rr
		if r.HasStatus {
			m[r.Name+"/status"] = &statusREST{main: rr}
		}
		if hasScale(r) {
			m[r.Name+"/scale"] = &scaleREST{main: rr}
		}
		if r.Kind == "Pod" {
			m["pods/binding"] = &bindingREST{pods: rr}
			m["pods/eviction"] = &evictionREST{pods: rr}
			streams := podStreams{s: s}
			m["pods/log"] = &podLogREST{streams}
			m["pods/exec"] = &podExecREST{streams}
			m["pods/attach"] = &podAttachREST{streams}
			m["pods/portforward"] = &podPortForwardREST{streams}
		}
	}
	for group, storage := range map[string]map[string]rest.Storage{
		authorizationv1.GroupName: {"selfsubjectaccessreviews": &selfSubjectAccessReviews{authz: requestAuthorizer()},
			"selfsubjectrulesreviews": &selfSubjectRulesReviews{}},
		authenticationv1.GroupName: {"selfsubjectreviews": &selfSubjectReviews{}},
	} {
		i := genericapiserver.NewDefaultAPIGroupInfo(group, scheme, runtime.NewParameterCodec(scheme), codecs)
		i.VersionedResourcesStorageMap["v1"] = storage
		infos[group] = &i
		order = append(order, group)
	}
	eventsV1, err := eventsV1Group(infos[""], scheme, codecs)
	if err != nil {
		return err
	}
	infos[eventsv1.GroupName], order = eventsV1, append(order, eventsv1.GroupName)
	for _, g := range order {
		var err error
		if g == "" {
			err = srv.InstallLegacyAPIGroup("/api", infos[g])
		} else {
			err = srv.InstallAPIGroup(infos[g])
		}
		if err != nil {
			return fmt.Errorf("install API group %q: %w", g, err)
		}
	}
	return nil
}

func (s *Server) newResourceREST(r *api.Resource, st *store.Store, scheme *runtime.Scheme, codecs serializer.CodecFactory) (*resourceREST, error) {
	gr := r.GroupResource()
	strategy := readStrategy{ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator, namespaced: r.Namespaced}
	reg := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return r.New() },
		NewListFunc:               newListFunc(scheme, r),
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: schema.GroupResource{Group: r.Group, Resource: strings.ToLower(r.Kind)},
		CreateStrategy:            strategy,
		UpdateStrategy:            strategy,
		DeleteStrategy:            strategy,
		TableConvertor:            printers.For(r),
	}
	codec := codecs.LegacyCodec(schema.GroupVersion{Group: r.Group, Version: r.Version})
	opts := generic.RESTOptions{
		StorageConfig: &storagebackend.ConfigForResource{
			Config:        storagebackend.Config{Codec: codec, EventsHistoryWindow: storagebackend.DefaultEventsHistoryWindow},
			GroupResource: gr,
		},
		Decorator:               withWatchCache(st, r.Namespaced),
		ResourcePrefix:          "/" + r.Name,
		DeleteCollectionWorkers: 1,
	}
	attrs := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		o, ok := obj.(api.Object)
		if !ok {
			return nil, nil, fmt.Errorf("not a %s: %T", r.Kind, obj)
		}
		return labels.Set(o.GetLabels()), selectableFields(r, o), nil
	}
	storeOpts := &generic.StoreOptions{RESTOptions: opts, AttrFunc: attrs}
	if r.Kind == "Pod" {
		// Each agent watches the pods of its node: the watch cache
		// dispatches a pod's event to the watchers of its node only,
		// as kube-apiserver does for kubelets.
		storeOpts.TriggerFunc = storage.IndexerFuncs{"spec.nodeName": func(obj runtime.Object) string {
			if p, ok := obj.(*corev1.Pod); ok {
				return p.Spec.NodeName
			}
			return ""
		}}
	}
	if err := reg.CompleteWithOptions(storeOpts); err != nil {
		return nil, fmt.Errorf("%s registry: %w", r.Name, err)
	}
	return &resourceREST{Store: reg, s: s, r: r}, nil
}

// withWatchCache puts the apiserver's watch cache in front of the store,
// as its StorageWithCacher does for etcd: lists, pagination, exact and
// not-older-than resourceVersions, bookmarks and initial events are
// served from it.
func withWatchCache(st *store.Store, namespaced bool) generic.StorageDecorator {
	return func(cfg *storagebackend.ConfigForResource, prefix string, keyFunc func(runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, attrs storage.AttrFunc, triggers storage.IndexerFuncs,
		indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
		raw := kubestorage.NewStorage(st, cfg.Codec, prefix, namespaced, newFunc, newListFunc)
		c, err := cacherstorage.NewCacherFromConfig(cacherstorage.Config{
			Storage: raw, Versioner: storage.APIObjectVersioner{}, GroupResource: cfg.GroupResource,
			EventsHistoryWindow: cfg.EventsHistoryWindow, ResourcePrefix: prefix, KeyFunc: keyFunc,
			NewFunc: newFunc, NewListFunc: newListFunc, GetAttrsFunc: attrs, IndexerFuncs: triggers,
			Indexers: indexers, Codec: cfg.Codec,
		})
		if err != nil {
			return nil, nil, err
		}
		d := cacherstorage.NewCacheDelegator(c, raw)
		return d, func() { d.Stop(); c.Stop() }, nil
	}
}

// withLimits admits a request the generic chain has authenticated and
// authorized: its namespace and name must be ones an object can have, it
// takes one of skep's slots (limits.go), and a body is read here, bounded
// in size and time, and a YAML body refused when its aliases would expand
// it past the limit, before the generic decoder (which expands them) sees
// it.
func (s *Server) withLimits(h http.Handler, codecs serializer.CodecFactory) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := genericrequest.RequestInfoFrom(r.Context())
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		// boundBody, outermost, closes the connection of an error
		// answer to a request whose body may be unread.
		fail := func(err error) {
			responsewriters.ErrorNegotiated(err, codecs, schema.GroupVersion{}, w, r)
		}
		verb := "get" // discovery and OpenAPI documents are reads like any other
		if info.IsResourceRequest {
			if err := checkPathSegments(info.Namespace, info.Name); err != nil {
				fail(err)
				return
			}
			verb = info.Verb
			switch {
			case streamSubresources.Has(info.Subresource):
				// A stream to an agent is held open like a watch, and
				// counts against its credential as watches do.
				verb = "watch"
			case verb == "create", verb == "update", verb == "patch", verb == "delete", verb == "deletecollection":
				verb = "write"
			}
		}
		release, err := s.admit.acquire(r.Context(), verb, identityFrom(r.Context()).String())
		if err != nil {
			fail(err)
			return
		}
		defer release()
		if verb == "write" && r.Body != nil && r.Body != http.NoBody {
			body, err := s.admit.readBody(w, r)
			if err != nil {
				fail(err)
				return
			}
			if isYAML(r.Header.Get("Content-Type")) {
				if err := api.CheckYAMLExpansion(body); err != nil {
					if errors.Is(err, api.ErrTooLarge) {
						fail(apierrors.NewRequestEntityTooLargeError(err.Error()))
					} else {
						fail(apierrors.NewBadRequest(err.Error()))
					}
					return
				}
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		h.ServeHTTP(w, r)
	})
}

// isYAML says whether a body may be decoded as YAML: any content type
// that mentions it, however its parameters are written (the generic
// server's patch handler cuts the header at the first ';' rather than
// parsing it, so a type a strict parser rejects still reaches its YAML
// decoder).
func isYAML(ct string) bool {
	return strings.Contains(strings.ToLower(ct), "yaml")
}

// boundBody is the outermost wrapper of the Kubernetes API: a request
// with a body must send it within the body timeout, and an answer
// refusing it before it was read (the generic chain's 401 and 403) closes
// the connection, so that no client holds one open by trickling a body
// the server would otherwise read on to reuse the connection.
func (s *Server) boundBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		// Not every connection takes a deadline (a test recorder);
		// readBody sets its own and clears it once the body is in.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.admit.limits.BodyTimeout))
		h.ServeHTTP(&closeOnRefusal{ResponseWriter: w}, r)
	})
}

// closeOnRefusal marks an error answer as the connection's last.
type closeOnRefusal struct{ http.ResponseWriter }

func (c *closeOnRefusal) WriteHeader(code int) {
	if code >= 400 {
		c.Header().Set("Connection", "close")
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closeOnRefusal) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *closeOnRefusal) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// readStrategy satisfies the generic registry's strategies, which it
// needs to be built; resourceREST writes through skep's registry, so only
// the scope and names are ever asked of it.
type readStrategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	namespaced bool
}

func (s readStrategy) NamespaceScoped() bool                                          { return s.namespaced }
func (readStrategy) PrepareForCreate(context.Context, runtime.Object)                 {}
func (readStrategy) PrepareForUpdate(context.Context, runtime.Object, runtime.Object) {}
func (readStrategy) Validate(context.Context, runtime.Object) field.ErrorList         { return nil }
func (readStrategy) ValidateUpdate(context.Context, runtime.Object, runtime.Object) field.ErrorList {
	return nil
}
func (readStrategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (readStrategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}
func (readStrategy) Canonicalize(runtime.Object)                   {}
func (readStrategy) AllowCreateOnUpdate(context.Context) bool      { return false }
func (readStrategy) AllowUnconditionalUpdate(context.Context) bool { return true }

// kubeVersion is what /version answers: Kubernetes' version with skep's
// mark, as distributions write theirs (v1.37.2+k3s1), where the generic
// server would print the unset build stamp it cannot parse.
type kubeVersion struct {
	compatibility.EffectiveVersion
}

func (v kubeVersion) Info() *apimachineryversion.Info {
	info := v.EffectiveVersion.Info()
	info.GitVersion = "v" + KubernetesVersion + "+skep"
	info.GitCommit, info.GitTreeState, info.BuildDate = "", "", ""
	return info
}

// klogAtWarn passes on the generic server's klog output from warnings up:
// its informational lines (every group installed, every watch cache
// restarted) are not the operator's business.
type klogAtWarn struct{ slog.Handler }

func (h klogAtWarn) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}
