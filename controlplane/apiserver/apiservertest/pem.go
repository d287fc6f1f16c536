package apiservertest

import (
	"encoding/pem"
	"net/http/httptest"
)

func certPEM(ts *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
}
