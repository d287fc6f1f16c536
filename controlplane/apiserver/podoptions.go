package apiserver

import (
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The options of pods/log, pods/exec, pods/attach and pods/portforward
// come as a query (?container=app&follow=true, ?command=sh&command=-c).
// The generic server decodes a query into an options object with the
// scheme's conversion from url.Values; Kubernetes generates those for
// its internal types, and k8s.io/api has none, so they are here: each
// parameter with the same parsing Kubernetes' generated conversions
// apply (apimachinery's Convert_Slice_string_To_* helpers), and an error
// that names the parameter.

// addPodOptionConversions registers the query conversions of the pod
// subresources' options.
func addPodOptionConversions(s *runtime.Scheme) error {
	for _, c := range []struct {
		out any
		fn  func(url.Values, any) error
	}{
		{&corev1.PodLogOptions{}, func(q url.Values, o any) error { return logOptionsFromQuery(q, o.(*corev1.PodLogOptions)) }},
		{&corev1.PodExecOptions{}, func(q url.Values, o any) error { return execOptionsFromQuery(q, o.(*corev1.PodExecOptions)) }},
		{&corev1.PodAttachOptions{}, func(q url.Values, o any) error { return attachOptionsFromQuery(q, o.(*corev1.PodAttachOptions)) }},
		{&corev1.PodPortForwardOptions{}, func(q url.Values, o any) error {
			return portForwardOptionsFromQuery(q, o.(*corev1.PodPortForwardOptions))
		}},
	} {
		fn := c.fn
		if err := s.AddConversionFunc((*url.Values)(nil), c.out, func(a, b any, _ conversion.Scope) error {
			return fn(*a.(*url.Values), b)
		}); err != nil {
			return err
		}
	}
	return nil
}

// query reads one parameter with an apimachinery conversion, and says
// which parameter was wrong.
type query url.Values

func (q query) bool(name string, out *bool) error {
	v := q[name]
	return runtime.Convert_Slice_string_To_bool(&v, out, nil)
}

func (q query) string(name string, out *string) error {
	v := q[name]
	return runtime.Convert_Slice_string_To_string(&v, out, nil)
}

// int64 leaves out nil when the parameter is absent.
func (q query) int64(name string, out **int64) error {
	v, ok := q[name]
	if !ok || len(v) == 0 {
		*out = nil
		return nil
	}
	if err := runtime.Convert_Slice_string_To_Pointer_int64(&v, out, nil); err != nil {
		return fmt.Errorf("%s=%q: must be an integer", name, v[0])
	}
	return nil
}

func logOptionsFromQuery(in url.Values, out *corev1.PodLogOptions) error {
	q := query(in)
	if err := firstError(
		q.string("container", &out.Container),
		q.bool("follow", &out.Follow),
		q.bool("previous", &out.Previous),
		q.int64("sinceSeconds", &out.SinceSeconds),
		q.bool("timestamps", &out.Timestamps),
		q.int64("tailLines", &out.TailLines),
		q.int64("limitBytes", &out.LimitBytes),
		q.bool("insecureSkipTLSVerifyBackend", &out.InsecureSkipTLSVerifyBackend),
	); err != nil {
		return err
	}
	if v, ok := in["sinceTime"]; ok && len(v) > 0 {
		if err := metav1.Convert_Slice_string_To_Pointer_v1_Time(&v, &out.SinceTime, nil); err != nil {
			return fmt.Errorf("sinceTime=%q: must be a time in RFC 3339 form (2006-01-02T15:04:05Z)", v[0])
		}
	}
	if v, ok := in["stream"]; ok && len(v) > 0 {
		out.Stream = &v[0]
	}
	return nil
}

func execOptionsFromQuery(in url.Values, out *corev1.PodExecOptions) error {
	q := query(in)
	out.Command = in["command"]
	return firstError(
		q.string("container", &out.Container),
		q.bool("stdin", &out.Stdin),
		q.bool("stdout", &out.Stdout),
		q.bool("stderr", &out.Stderr),
		q.bool("tty", &out.TTY),
	)
}

func attachOptionsFromQuery(in url.Values, out *corev1.PodAttachOptions) error {
	q := query(in)
	return firstError(
		q.string("container", &out.Container),
		q.bool("stdin", &out.Stdin),
		q.bool("stdout", &out.Stdout),
		q.bool("stderr", &out.Stderr),
		q.bool("tty", &out.TTY),
	)
}

func portForwardOptionsFromQuery(in url.Values, out *corev1.PodPortForwardOptions) error {
	v := in["ports"]
	out.Ports = nil
	if err := metav1.Convert_Slice_string_To_Slice_int32(&v, &out.Ports, nil); err != nil {
		return fmt.Errorf("ports=%q: each port must be a number from 1 to 65535", v)
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// validateLogOptions checks what Kubernetes' validation of PodLogOptions
// checks, with its messages.
func validateLogOptions(o *corev1.PodLogOptions) field.ErrorList {
	var errs field.ErrorList
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, field.Invalid(field.NewPath("tailLines"), *o.TailLines, "must be greater than or equal to 0"))
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("limitBytes"), *o.LimitBytes, "must be greater than 0"))
	}
	if o.SinceSeconds != nil && o.SinceTime != nil {
		errs = append(errs, field.Forbidden(field.NewPath(""), "at most one of `sinceTime` or `sinceSeconds` may be specified"))
	}
	if o.SinceSeconds != nil && *o.SinceSeconds < 1 {
		errs = append(errs, field.Invalid(field.NewPath("sinceSeconds"), *o.SinceSeconds, "must be greater than 0"))
	}
	if o.Stream != nil && *o.Stream != corev1.LogStreamAll {
		errs = append(errs, field.NotSupported(field.NewPath("stream"), *o.Stream, []string{corev1.LogStreamAll}))
	}
	return errs
}
