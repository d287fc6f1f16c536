package api

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Kubernetes' limits on an Event's strings (pkg/apis/core/validation).
const (
	eventReportingInstanceLimit = 128
	eventActionLimit            = 128
	eventReasonLimit            = 128
	eventNoteLimit              = 1024
)

// validateEvent checks a core/v1 Event as Kubernetes checks one written
// through core/v1: an old-style event (no eventTime) lives in the
// namespace of the object it is about ("default" for a cluster-scoped
// one); a new-style one (eventTime set) also names who reported it and
// what happened, within the limits of events.k8s.io.
func validateEvent(e *corev1.Event) field.ErrorList {
	var errs field.ErrorList
	involvedNS := field.NewPath("involvedObject", "namespace")
	if e.EventTime.IsZero() {
		if e.InvolvedObject.Namespace == "" {
			if e.Namespace != metav1.NamespaceNone && e.Namespace != metav1.NamespaceDefault {
				errs = append(errs, field.Invalid(involvedNS, e.InvolvedObject.Namespace, "does not match event.namespace (an event about a cluster-scoped object goes in the default namespace)"))
			}
		} else if e.Namespace != e.InvolvedObject.Namespace {
			errs = append(errs, field.Invalid(involvedNS, e.InvolvedObject.Namespace, "does not match event.namespace"))
		}
	} else {
		if e.InvolvedObject.Namespace == "" && e.Namespace != metav1.NamespaceDefault && e.Namespace != metav1.NamespaceSystem {
			errs = append(errs, field.Invalid(involvedNS, e.InvolvedObject.Namespace, "does not match event.namespace (an event about a cluster-scoped object goes in default or kube-system)"))
		}
		errs = append(errs, requiredWithin(field.NewPath("reportingComponent"), e.ReportingController, 0)...)
		if e.ReportingController != "" {
			for _, msg := range validation.IsQualifiedName(e.ReportingController) {
				errs = append(errs, field.Invalid(field.NewPath("reportingComponent"), e.ReportingController, msg))
			}
		}
		errs = append(errs, requiredWithin(field.NewPath("reportingInstance"), e.ReportingInstance, eventReportingInstanceLimit)...)
		errs = append(errs, requiredWithin(field.NewPath("action"), e.Action, eventActionLimit)...)
		errs = append(errs, requiredWithin(field.NewPath("reason"), e.Reason, eventReasonLimit)...)
		if len(e.Message) > eventNoteLimit {
			errs = append(errs, field.TooLong(field.NewPath("message"), "", eventNoteLimit))
		}
	}
	return errs
}

// requiredWithin says a string field is missing or (with a limit) longer
// than it may be.
func requiredWithin(p *field.Path, v string, limit int) field.ErrorList {
	if v == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	if limit > 0 && len(v) > limit {
		return field.ErrorList{field.Invalid(p, "", fmt.Sprintf("can have at most %d characters", limit))}
	}
	return nil
}
