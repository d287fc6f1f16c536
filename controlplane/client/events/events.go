// Package events records core/v1 Events about objects, as client-go's
// record package does for Kubernetes' components: a caller says what
// happened and goes on (the write happens later, on the broadcaster's own
// goroutine, and is dropped, and counted, when the queue is full); a
// repeat of the same event within a window increments the count and
// lastTimestamp of the Event already written instead of making another;
// and one reporter writes about one object at most 25 times at once, then
// once every 5 minutes (client-go's spam filter), so a probe failing every
// second costs the store a write every 5 minutes, not every second.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// Defaults of Options, client-go's where it has one.
const (
	// DefaultQueueSize is how many events may wait for their write
	// (client-go's broadcaster queues 1000).
	DefaultQueueSize = 1000
	// DefaultWindow is how long a repeat counts into the Event already
	// written (client-go aggregates over 10 minutes).
	DefaultWindow = 10 * time.Minute
	// DefaultMaxCached bounds the Events remembered for aggregation
	// (client-go's LRU keeps 4096).
	DefaultMaxCached = 4096
	// DefaultSpamBurst and DefaultSpamInterval bound the writes of one
	// reporter about one object (client-go's: 25, then one per 5 minutes).
	DefaultSpamBurst    = 25
	DefaultSpamInterval = 5 * time.Minute
	// writeTimeout bounds one write, so a stuck API server delays later
	// events but never stops the queue for good.
	writeTimeout = 10 * time.Second
	// maxMessage is the longest message kept, events.k8s.io's limit on a
	// note: a message is for a person to read in `describe`.
	maxMessage = 1024
	// maxNameBumps bounds the names tried for one new Event: more than one
	// reporter's burst about one object, all in one nanosecond.
	maxNameBumps = 2 * DefaultSpamBurst
)

// Options tune a Broadcaster; zero values take the defaults.
type Options struct {
	QueueSize int
	Window    time.Duration
	MaxCached int
	// SpamBurst and SpamInterval: one reporter writes about one object
	// SpamBurst times, then once per SpamInterval.
	SpamBurst    int
	SpamInterval time.Duration
	// Now is the clock events are stamped with [time.Now].
	Now    func() time.Time
	Logger *slog.Logger
}

// Broadcaster writes the events of its Recorders through one client, in
// order, from Run's goroutine.
type Broadcaster struct {
	c        client.Interface
	events   *api.Resource
	queue    chan pending
	dropped  atomic.Uint64
	filtered atomic.Uint64
	opts     Options

	// seen is the last Event written for each aggregation key; only Run's
	// goroutine touches it.
	seen map[aggKey]*corev1.Event
	// limits is the spam filter's budget per reporter and object; only
	// Run's goroutine touches it.
	limits map[spamKey]*rate.Limiter
}

// spamKey is what the spam filter counts writes by: one reporter, one
// object.
type spamKey struct {
	source                     corev1.EventSource
	kind, apiVersion, ns, name string
	uid                        string
}

// pending is one event as its recorder was told it.
type pending struct {
	ref                     corev1.ObjectReference
	source                  corev1.EventSource
	eventType, reason, note string
	at                      time.Time
}

// aggKey is what makes two events the same event: who reported it, about
// what, and what they said.
type aggKey struct {
	source                     corev1.EventSource
	kind, apiVersion, ns, name string
	uid                        string
	fieldPath                  string
	eventType, reason, message string
}

func (p pending) key() aggKey {
	return aggKey{source: p.source, kind: p.ref.Kind, apiVersion: p.ref.APIVersion, ns: p.ref.Namespace, name: p.ref.Name,
		uid: string(p.ref.UID), fieldPath: p.ref.FieldPath, eventType: p.eventType, reason: p.reason, message: p.note}
}

// NewBroadcaster makes a Broadcaster writing through c; nothing is
// written until Run.
func NewBroadcaster(c client.Interface, opts Options) *Broadcaster {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxCached <= 0 {
		opts.MaxCached = DefaultMaxCached
	}
	if opts.SpamBurst <= 0 {
		opts.SpamBurst = DefaultSpamBurst
	}
	if opts.SpamInterval <= 0 {
		opts.SpamInterval = DefaultSpamInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Broadcaster{c: c, events: api.MustLookup("events"), queue: make(chan pending, opts.QueueSize), opts: opts,
		seen: map[aggKey]*corev1.Event{}, limits: map[spamKey]*rate.Limiter{}}
}

// Dropped is how many events were dropped because the queue was full.
func (b *Broadcaster) Dropped() uint64 { return b.dropped.Load() }

// Filtered is how many events the spam filter dropped.
func (b *Broadcaster) Filtered() uint64 { return b.filtered.Load() }

// Run writes queued events until ctx ends; events still queued then are
// lost, as they are when a Kubernetes component stops.
func (b *Broadcaster) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-b.queue:
			b.write(ctx, p)
		}
	}
}

// Recorder returns a recorder whose events name source as who reported
// them.
func (b *Broadcaster) Recorder(source corev1.EventSource) *Recorder {
	return &Recorder{b: b, source: source}
}

func (b *Broadcaster) enqueue(p pending) {
	select {
	case b.queue <- p:
	default:
		b.dropped.Add(1)
	}
}

func (b *Broadcaster) write(ctx context.Context, p pending) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if !b.allow(p) {
		b.filtered.Add(1)
		return
	}
	k := p.key()
	if prev, ok := b.seen[k]; ok && p.at.Sub(prev.LastTimestamp.Time) < b.opts.Window {
		next, err := b.increment(ctx, prev, p.at)
		if err == nil {
			b.seen[k] = next
			return
		}
		if !apierrors.IsNotFound(err) {
			b.failed("update", next, err)
			b.seen[k] = next // the next repeat still counts this one
			return
		}
		// Gone (its TTL passed): the repeat starts a new Event.
	}
	e := newEvent(p)
	out, err := b.c.Create(ctx, b.events, e)
	// Two events about one object in the same nanosecond (a coarse clock)
	// would have one name: the later takes the next free nanosecond.
	for bump := 1; apierrors.IsAlreadyExists(err) && bump < maxNameBumps; bump++ {
		e.Name = eventName(p.ref.Name, p.at.Add(time.Duration(bump)))
		out, err = b.c.Create(ctx, b.events, e)
	}
	if err != nil {
		b.failed("create", e, err)
		delete(b.seen, k)
		return
	}
	b.remember(k, out.(*corev1.Event))
}

// allow spends one write of p's reporter about p's object, if it has one.
func (b *Broadcaster) allow(p pending) bool {
	k := spamKey{source: p.source, kind: p.ref.Kind, apiVersion: p.ref.APIVersion, ns: p.ref.Namespace, name: p.ref.Name, uid: string(p.ref.UID)}
	lim, ok := b.limits[k]
	if !ok {
		if len(b.limits) >= b.opts.MaxCached {
			b.forgetIdleLimits(p.at)
		}
		lim = rate.NewLimiter(rate.Every(b.opts.SpamInterval), b.opts.SpamBurst)
		b.limits[k] = lim
	}
	return lim.AllowN(p.at, 1)
}

// forgetIdleLimits drops the budgets that are full again (a new one is
// the same), and all of them when that is not enough.
func (b *Broadcaster) forgetIdleLimits(now time.Time) {
	for k, lim := range b.limits {
		if lim.TokensAt(now) >= float64(b.opts.SpamBurst) {
			delete(b.limits, k)
		}
	}
	if len(b.limits) >= b.opts.MaxCached {
		clear(b.limits)
	}
}

// increment counts one more occurrence into the Event prev. Only this
// broadcaster writes an Event of that name, so a conflict means its copy
// is stale (a retried write that landed): it counts into the stored one.
func (b *Broadcaster) increment(ctx context.Context, prev *corev1.Event, at time.Time) (*corev1.Event, error) {
	next := prev.DeepCopy()
	for attempt := 0; ; attempt++ {
		next.Count++
		next.LastTimestamp = metav1.NewTime(at)
		out, err := b.c.Update(ctx, b.events, next)
		if err == nil {
			return out.(*corev1.Event), nil
		}
		if !apierrors.IsConflict(err) || attempt > 0 {
			return next, err
		}
		cur, err := b.c.Get(ctx, b.events, prev.Namespace, prev.Name)
		if err != nil {
			return next, err
		}
		next = cur.(*corev1.Event)
	}
}

// remember keeps e for aggregation, first forgetting Events whose window
// has passed when the cache is full, and everything when that is not
// enough: a forgotten repeat only makes a new Event.
func (b *Broadcaster) remember(k aggKey, e *corev1.Event) {
	if len(b.seen) >= b.opts.MaxCached {
		now := b.opts.Now()
		for key, old := range b.seen {
			if now.Sub(old.LastTimestamp.Time) >= b.opts.Window {
				delete(b.seen, key)
			}
		}
		if len(b.seen) >= b.opts.MaxCached {
			clear(b.seen)
		}
	}
	b.seen[k] = e
}

func (b *Broadcaster) failed(op string, e *corev1.Event, err error) {
	// A refusal is a bug to see (the credential may not write events, or
	// the event is malformed); the API server being away is not news, nor
	// is a namespace being deleted refusing new content, as client-go's
	// recorder keeps quiet about both.
	level := slog.LevelDebug
	refused := apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
	if refused && !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		level = slog.LevelWarn
	}
	b.opts.Logger.Log(context.Background(), level, op+" event", "event", e.Namespace+"/"+e.Name, "reason", e.Reason, "err", err)
}

// newEvent is a first occurrence, named as client-go names it: the
// object's name and the time in hex, unique for one reporter.
func newEvent(p pending) *corev1.Event {
	ns := p.ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault // where Kubernetes puts events about cluster-scoped objects
	}
	t := metav1.NewTime(p.at)
	return &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: eventName(p.ref.Name, p.at), Namespace: ns},
		InvolvedObject:      p.ref,
		Reason:              p.reason,
		Message:             p.note,
		Type:                p.eventType,
		Source:              p.source,
		FirstTimestamp:      t,
		LastTimestamp:       t,
		Count:               1,
		ReportingController: p.source.Component,
		ReportingInstance:   p.source.Host,
	}
}

// eventName is <object>.<hex nanoseconds>, the object's part shortened
// so the whole stays a DNS subdomain (253 characters).
func eventName(object string, at time.Time) string {
	suffix := fmt.Sprintf(".%x", at.UnixNano())
	if max := 253 - len(suffix); len(object) > max {
		object = strings.TrimRight(object[:max], ".-")
	}
	return object + suffix
}

// Recorder records events of one reporter. A nil Recorder records
// nothing, so a component built without one needs no checks.
type Recorder struct {
	b      *Broadcaster
	source corev1.EventSource
}

// Event records that something of type eventType (Normal or Warning)
// happened to obj, for reason; it never blocks.
func (r *Recorder) Event(obj api.Object, eventType, reason, message string) {
	r.Record(Ref(obj), eventType, reason, message)
}

// Eventf is Event with a formatted message.
func (r *Recorder) Eventf(obj api.Object, eventType, reason, format string, args ...any) {
	r.Record(Ref(obj), eventType, reason, fmt.Sprintf(format, args...))
}

// Record records an event about ref, which may name a part of the object
// (fieldPath spec.containers{web} for a container).
func (r *Recorder) Record(ref corev1.ObjectReference, eventType, reason, message string) {
	if r == nil {
		return
	}
	if len(message) > maxMessage {
		message = message[:maxMessage]
	}
	r.b.enqueue(pending{ref: ref, source: r.source, eventType: eventType, reason: reason, note: message, at: r.b.opts.Now()})
}

// Ref is the reference an event about obj carries.
func Ref(obj api.Object) corev1.ObjectReference {
	apiVersion, kind := obj.GetObjectKind().GroupVersionKind().ToAPIVersionAndKind()
	if kind == "" {
		// A Go value made in the code carries no kind: find it by type.
		for _, r := range api.All() {
			if reflect.TypeOf(r.New()) == reflect.TypeOf(obj) {
				apiVersion, kind = r.APIVersion(), r.Kind
				break
			}
		}
	}
	return corev1.ObjectReference{Kind: kind, APIVersion: apiVersion, Namespace: obj.GetNamespace(), Name: obj.GetName(),
		UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion()}
}
