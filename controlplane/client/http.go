package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

// HTTP talks to an API server over HTTPS with a bearer token.
type HTTP struct {
	base string
	// token is swapped by SetToken while requests are under way: an agent
	// rotates its credential without restarting its informers.
	token atomic.Pointer[string]
	hc    *http.Client
	caPEM []byte // for client-go's streaming clients (streams.go)
}

var _ Interface = (*HTTP)(nil)

// New makes a client from a config. The server's certificate must be
// signed by the config's CA.
func New(cfg Config) (*HTTP, error) {
	if _, err := url.Parse(cfg.Server); err != nil || !strings.HasPrefix(cfg.Server, "https://") {
		return nil, fmt.Errorf("server %q: must be an https:// URL", cfg.Server)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, errors.New("the config holds no CA certificate to verify the server with")
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	c := &HTTP{base: strings.TrimRight(cfg.Server, "/"), hc: &http.Client{Transport: tr}, caPEM: cfg.CAPEM}
	c.SetToken(cfg.Token)
	return c, nil
}

// SetToken makes every request from now on carry token; requests already
// sent (a watch among them) keep the one they were sent with.
func (c *HTTP) SetToken(token string) { c.token.Store(&token) }

// Token is the bearer token requests carry now.
func (c *HTTP) Token() string { return *c.token.Load() }

// Do sends a request to a path of the server and decodes a JSON answer into
// out (when not nil); an error answer becomes a StatusError.
func (c *HTTP) Do(ctx context.Context, method, path string, body any, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return statusError(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func (c *HTTP) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if raw, ok := body.(json.RawMessage); ok {
		rd = bytes.NewReader(raw)
	} else if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if t := c.Token(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	return resp, nil
}

func statusError(code int, data []byte) error {
	var st metav1.Status
	if err := json.Unmarshal(data, &st); err == nil && st.Kind == "Status" {
		return &apierrors.StatusError{ErrStatus: st}
	}
	return apierrors.NewGenericServerResponse(code, "", api.MustLookup("pods").GroupResource(), "", strings.TrimSpace(string(data)), 0, false)
}

func (c *HTTP) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	obj := r.New()
	if err := c.Do(ctx, http.MethodGet, r.Path(ns, name), nil, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func query(opts ListOptions, watch bool) string {
	q := url.Values{}
	if opts.LabelSelector != "" {
		q.Set("labelSelector", opts.LabelSelector)
	}
	if opts.FieldSelector != "" {
		q.Set("fieldSelector", opts.FieldSelector)
	}
	if opts.ResourceVersion != "" {
		q.Set("resourceVersion", opts.ResourceVersion)
	}
	if watch {
		q.Set("watch", "true")
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func (c *HTTP) List(ctx context.Context, r *api.Resource, ns string, opts ListOptions) ([]api.Object, string, error) {
	var l struct {
		Metadata metav1.ListMeta   `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := c.Do(ctx, http.MethodGet, r.Path(ns, "")+query(opts, false), nil, &l); err != nil {
		return nil, "", err
	}
	out := make([]api.Object, 0, len(l.Items))
	for _, raw := range l.Items {
		obj := r.New()
		if err := json.Unmarshal(raw, obj); err != nil {
			return nil, "", fmt.Errorf("decode %s: %w", r.Kind, err)
		}
		out = append(out, obj)
	}
	return out, l.Metadata.ResourceVersion, nil
}

func (c *HTTP) Create(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	out := r.New()
	api.SetTypeMeta(r, obj)
	return out, c.Do(ctx, http.MethodPost, r.Path(obj.GetNamespace(), ""), obj, out)
}

func (c *HTTP) Update(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	out := r.New()
	api.SetTypeMeta(r, obj)
	return out, c.Do(ctx, http.MethodPut, r.Path(obj.GetNamespace(), obj.GetName()), obj, out)
}

func (c *HTTP) UpdateStatus(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	out := r.New()
	api.SetTypeMeta(r, obj)
	return out, c.Do(ctx, http.MethodPut, r.Path(obj.GetNamespace(), obj.GetName())+"/status", obj, out)
}

func (c *HTTP) Delete(ctx context.Context, r *api.Resource, ns, name string, opts DeleteOptions) error {
	body := metav1.DeleteOptions{GracePeriodSeconds: opts.GracePeriodSeconds, PropagationPolicy: opts.PropagationPolicy}
	if opts.ResourceVersion != "" || opts.UID != "" {
		body.Preconditions = &metav1.Preconditions{}
		if opts.ResourceVersion != "" {
			body.Preconditions.ResourceVersion = &opts.ResourceVersion
		}
		if opts.UID != "" {
			body.Preconditions.UID = &opts.UID
		}
	}
	if opts.DryRun {
		body.DryRun = []string{metav1.DryRunAll}
	}
	return c.Do(ctx, http.MethodDelete, r.Path(ns, name), body, nil)
}

func (c *HTTP) Watch(ctx context.Context, r *api.Resource, ns string, opts ListOptions) (<-chan Event, error) {
	resp, err := c.send(ctx, http.MethodGet, r.Path(ns, "")+query(opts, true), nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return nil, statusError(resp.StatusCode, data)
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var line struct {
				Type   EventType       `json:"type"`
				Object json.RawMessage `json:"object"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				return
			}
			if line.Type == Error {
				// A Status (410 Expired for a resourceVersion too old)
				// ends the stream.
				var st metav1.Status
				_ = json.Unmarshal(line.Object, &st)
				select {
				case out <- Event{Type: Error, Status: &st}:
				case <-ctx.Done():
				}
				return
			}
			obj := r.New()
			if err := json.Unmarshal(line.Object, obj); err != nil {
				return
			}
			select {
			case out <- Event{Type: line.Type, Object: obj}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Apply sends a document as the user wrote it (unknown fields and all, so
// the server names them) to create an object or, with update, replace it.
// With dryRun the server checks everything, allocation and quota
// included, and writes nothing.
func (c *HTTP) Apply(ctx context.Context, r *api.Resource, ns, name string, doc json.RawMessage, update, dryRun bool) error {
	path := r.Path(ns, "")
	method := http.MethodPost
	if update {
		path, method = r.Path(ns, name), http.MethodPut
	}
	// Strict: a field the server does not know is an error naming it, as
	// kubectl asks for by default.
	path += "?fieldValidation=Strict"
	if dryRun {
		path += "&dryRun=All"
	}
	return c.Do(ctx, method, path, doc, nil)
}
