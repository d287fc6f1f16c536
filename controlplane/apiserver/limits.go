package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

// Limits bound what clients can make the server hold at once, as
// kube-apiserver's --max-requests-inflight and
// --max-mutating-requests-inflight do, and how long a request may take.
// The zero value of a field takes its default.
type Limits struct {
	// ReadsInFlight bounds gets and lists being served (default 400).
	ReadsInFlight int
	// WritesInFlight bounds creates, updates and deletes (default 200).
	WritesInFlight int
	// ListsInFlight bounds the lists being answered (default half the
	// CPUs, at least 1): a whole list decodes and encodes every object, and
	// a few at once take every CPU from the small requests behind them
	// (BenchmarkUnpaginatedLists: another client's GET p99 1.1 s with no
	// bound, 225 ms with 2, 92 ms with 1, on 2 CPUs). Lists over it wait
	// their turn, within the request timeout.
	ListsInFlight int
	// WatchesPerCredential bounds the watches one credential holds open
	// (default 200; an agent holds 4).
	WatchesPerCredential int
	// BodyTimeout bounds reading a request's body (default 30 s): a client
	// that trickles a body cannot hold a connection and a slot for long.
	BodyTimeout time.Duration
	// RequestTimeout bounds a request that is not a watch or a stream
	// (default 60 s, kube-apiserver's --request-timeout).
	RequestTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.ReadsInFlight <= 0 {
		l.ReadsInFlight = 400
	}
	if l.WritesInFlight <= 0 {
		l.WritesInFlight = 200
	}
	if l.ListsInFlight <= 0 {
		l.ListsInFlight = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if l.WatchesPerCredential <= 0 {
		l.WatchesPerCredential = 200
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = 30 * time.Second
	}
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = 60 * time.Second
	}
	return l
}

// admission is the server's count of what is in flight.
type admission struct {
	limits Limits
	reads  chan struct{}
	writes chan struct{}
	lists  chan struct{}

	mu      sync.Mutex
	watches map[string]int // credential → open watches
}

func newAdmission(l Limits) *admission {
	l = l.withDefaults()
	return &admission{limits: l, reads: make(chan struct{}, l.ReadsInFlight), writes: make(chan struct{}, l.WritesInFlight),
		lists: make(chan struct{}, l.ListsInFlight), watches: map[string]int{}}
}

// tooMany is Kubernetes' answer to a request over a limit: 429 with
// Retry-After, which client-go honours.
func tooMany(msg string) error {
	return apierrors.NewTooManyRequests(msg, 1)
}

// acquire takes a slot for verb and returns its release; 429 when the
// server is full. Watches count against the credential (who), not the
// server: they are long-lived and cost little while idle.
func (a *admission) acquire(ctx context.Context, verb, who string) (func(), error) {
	switch verb {
	case "watch":
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.watches[who] >= a.limits.WatchesPerCredential {
			return nil, tooMany(fmt.Sprintf("%s has %d watches open, the most one credential may hold", who, a.limits.WatchesPerCredential))
		}
		a.watches[who]++
		return func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.watches[who]--; a.watches[who] <= 0 {
				delete(a.watches, who)
			}
		}, nil
	case "get":
		return take(a.reads, "reads")
	case "list":
		release, err := take(a.reads, "reads")
		if err != nil {
			return nil, err
		}
		select {
		case a.lists <- struct{}{}:
			return func() { <-a.lists; release() }, nil
		case <-ctx.Done():
			release()
			return nil, tooMany(fmt.Sprintf("the server is answering the most lists it answers at once (%d), and this one waited its whole request timeout; try again, or list in pages", cap(a.lists)))
		}
	default:
		return take(a.writes, "writes")
	}
}

func take(slots chan struct{}, what string) (func(), error) {
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, nil
	default:
		return nil, tooMany(fmt.Sprintf("the server is serving the most %s it serves at once (%d); try again", what, cap(slots)))
	}
}

// readBody reads a request body of at most api.MaxDocumentBytes within
// the body timeout: 413 for a larger body (at once when Content-Length says
// so), and 408 for a body that does not arrive in time.
func (a *admission) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := a.readBodyOnce(w, r)
	if err != nil {
		return nil, refuseUnread(w, r, err)
	}
	return body, nil
}

func (a *admission) readBodyOnce(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > api.MaxDocumentBytes {
		return nil, tooLarge()
	}
	// Not every connection can take a deadline (a test recorder); the
	// limit on size still holds there.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(a.limits.BodyTimeout))
	defer http.NewResponseController(w).SetReadDeadline(time.Time{})
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxDocumentBytes))
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooBig):
		return nil, tooLarge()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusRequestTimeout, Reason: metav1.StatusReasonTimeout,
			Message: fmt.Sprintf("the request body did not arrive within %s", a.limits.BodyTimeout)}}
	}
	return nil, apierrors.NewBadRequest("read the request body: " + err.Error())
}

func tooLarge() error {
	return apierrors.NewRequestEntityTooLargeError("limit is " + strconv.Itoa(api.MaxDocumentBytes) + " bytes")
}
