package apiserver

import (
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
)

// checkPathSegments refuses a namespace or name on the URL that no object
// can have, before the store sees it: a namespace is a DNS label, and a
// name a path segment Kubernetes allows (not "." or "..", no "/" or "%").
// What a given resource allows beyond that is validation's business; a
// GET of a name no object can have is simply not found.
func checkPathSegments(namespace, name string) error {
	if namespace != "" {
		if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
			return apierrors.NewBadRequest(fmt.Sprintf("namespace %q on the URL is not a valid namespace name: %s", namespace, strings.Join(errs, "; ")))
		}
	}
	if name != "" {
		if errs := content.IsPathSegmentName(name); len(errs) > 0 {
			return apierrors.NewBadRequest(fmt.Sprintf("name %q on the URL is not a valid object name: %s", name, strings.Join(errs, "; ")))
		}
	}
	return nil
}
