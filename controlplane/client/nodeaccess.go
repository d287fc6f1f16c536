package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// What the API server proxies to a node's agent on skep's own path, and
// the formats the client, the API server and the agent share: image
// import (nodes/NAME/proxy/images), and the agent's serving certificate.
// Logs, exec, attach and port-forward are Kubernetes' (streams.go).

// ImportResult is what an agent answers an image import with.
type ImportResult struct {
	Node   string   `json:"node"`
	Images []string `json:"images"`
}

// ImportImage loads an image archive (OCI layout or docker-archive tar)
// onto a node's containerd, through the API server and the node's agent.
func (c *HTTP) ImportImage(ctx context.Context, node string, archive io.Reader) (ImportResult, error) {
	body, err := c.stream(ctx, http.MethodPost, "/api/v1/nodes/"+url.PathEscape(node)+"/proxy/images", archive, "application/x-tar")
	if err != nil {
		return ImportResult{}, err
	}
	defer body.Close()
	var res ImportResult
	if err := json.NewDecoder(body).Decode(&res); err != nil {
		return ImportResult{}, fmt.Errorf("import image on node %s: decode the answer: %w", node, err)
	}
	return res, nil
}

// stream sends a request with a raw body and returns the answer's body
// when it is a success; an error answer becomes a StatusError.
func (c *HTTP) stream(ctx context.Context, method, path string, body io.Reader, contentType string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if t := c.Token(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, statusError(resp.StatusCode, data)
	}
	return resp.Body, nil
}

func podsPath(namespace, pod string) string {
	return "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(pod)
}

// ServingCertificatePath is where an agent, with its node credential,
// asks the API server to sign its serving certificate.
const ServingCertificatePath = "/skep/v1/serving-certificate"

// ServingCertificateRequest carries a request made by
// pki.NewServingRequest.
type ServingCertificateRequest struct {
	CSR string `json:"csr"`
}

// ServingCertificateResponse carries the signed certificate and the CA
// that signed it, which is also the CA of the API server's client
// certificate: the only client the agent serves.
type ServingCertificateResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}
