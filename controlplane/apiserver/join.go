package apiserver

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/pki"
)

// joinRequest is what an agent sends with the node-join token to get a
// credential of its own.
type joinRequest struct {
	NodeName string `json:"nodeName"`
}

// JoinResponse carries an agent's own credential.
type JoinResponse struct {
	Token string `json:"token"`
}

func (s *Server) join(w http.ResponseWriter, r *http.Request, id Identity) {
	if r.Method != http.MethodPost {
		writeError(w, apierrors.NewMethodNotSupported(gr(api.MustLookup("nodes")), r.Method))
		return
	}
	if !id.Joining && !id.Admin {
		writeError(w, apierrors.NewForbidden(gr(api.MustLookup("nodes")), "", errors.New("joining needs the node-join token")))
		return
	}
	var req joinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil || req.NodeName == "" {
		writeError(w, apierrors.NewBadRequest(`the body must be {"nodeName": "<node>"}`))
		return
	}
	if errs := api.Validate(api.MustLookup("nodes"), nodeNamed(req.NodeName)); len(errs) > 0 {
		writeError(w, invalid(api.MustLookup("nodes"), req.NodeName, errs))
		return
	}
	token, err := pki.RandomToken()
	if err == nil {
		err = s.auth.issueNodeToken(r.Context(), req.NodeName, token)
	}
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	s.log.Info("node joined", "node", req.NodeName)
	writeJSON(w, http.StatusOK, JoinResponse{Token: token})
}
