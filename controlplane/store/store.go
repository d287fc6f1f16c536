// Package store keeps the cluster's objects in a NATS JetStream key-value
// bucket. A key's revision is the object's resourceVersion: revisions are the
// bucket stream's sequence numbers, so they grow across the whole cluster as
// etcd's do, every update is a compare-and-set on the revision read, and a
// watch resumes from any revision after a reconnect.
//
// The store holds bytes; encoding objects is the caller's business.
package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Sentinels, mapped from JetStream's errors in one place (mapErr).
var (
	// ErrNotFound: the key does not exist (or was deleted).
	ErrNotFound = errors.New("not found")
	// ErrExists: Create found the key already there.
	ErrExists = errors.New("already exists")
	// ErrConflict: the revision given to Update or Delete is not the key's
	// latest; the caller read a stale object.
	ErrConflict = errors.New("revision conflict")
	// ErrTooLarge: Create or Update got a value over MaxObjectBytes.
	ErrTooLarge = fmt.Errorf("object larger than %d bytes", MaxObjectBytes)
)

// MaxObjectBytes is the largest value the store takes, 1.5 MiB, which is
// what Kubernetes allows an object through etcd. It is checked before NATS
// sees a value, so every NATS (embedded, or external with enough
// max_payload) gives the same limit and the same error.
const MaxObjectBytes = 3 << 19

// Key names one object: resource (plural), namespace ("" when cluster
// scoped) and name. Any strings will do: keys.go encodes each into one
// token of a KV key, and distinct keys into distinct KV keys.
type Key struct {
	Resource  string
	Namespace string
	Name      string
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Resource + "/" + k.Name
	}
	return k.Resource + "/" + k.Namespace + "/" + k.Name
}

// Entry is one stored object.
type Entry struct {
	Key      Key
	Value    []byte
	Revision uint64
}

// Store is a key-value bucket holding every object of the cluster.
type Store struct {
	kv jetstream.KeyValue
	// stream is the bucket's stream, and subjectPrefix what its subjects
	// start with before a key: List reads the newest message directly.
	stream        jetstream.Stream
	subjectPrefix string
}

// Config says which bucket to use and how to create it.
type Config struct {
	Bucket string // default "skep"
	// Replicas of the bucket's stream in a clustered NATS; 1 embedded.
	Replicas int
}

// Open opens (creating when missing) the bucket on a NATS connection.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = "skep"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "skep cluster state",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
	}
	stream, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("open the stream of bucket %s: %w", cfg.Bucket, err)
	}
	return &Store{kv: kv, stream: stream, subjectPrefix: "$KV." + cfg.Bucket + "."}, nil
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, jetstream.ErrKeyExists):
		// Update and Delete with a stale revision also answer "wrong last
		// sequence", which matches ErrKeyExists by code; callers of those
		// map it to ErrConflict themselves.
		return fmt.Errorf("%w: %w", ErrExists, err)
	}
	return err
}

// checkSize refuses a value over MaxObjectBytes, naming the key and both
// sizes.
func checkSize(k Key, value []byte) error {
	if len(value) > MaxObjectBytes {
		return fmt.Errorf("%s is %d bytes: %w", k, len(value), ErrTooLarge)
	}
	return nil
}

// Get reads one object.
func (s *Store) Get(ctx context.Context, k Key) (Entry, error) {
	subj, err := subject(k)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrNotFound, err) // too long to have been stored
	}
	e, err := s.kv.Get(ctx, subj)
	if err != nil {
		return Entry{}, mapErr(err)
	}
	return Entry{Key: k, Value: e.Value(), Revision: e.Revision()}, nil
}

// Create writes a new object; ErrExists when the key is taken.
func (s *Store) Create(ctx context.Context, k Key, value []byte) (uint64, error) {
	subj, err := subject(k)
	if err != nil {
		return 0, err
	}
	if err := checkSize(k, value); err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, subj, value)
	return rev, mapErr(err)
}

// Update replaces an object if its latest revision is still rev;
// ErrConflict otherwise, ErrNotFound when it was deleted.
func (s *Store) Update(ctx context.Context, k Key, value []byte, rev uint64) (uint64, error) {
	subj, err := subject(k)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err := checkSize(k, value); err != nil {
		return 0, err
	}
	n, err := s.kv.Update(ctx, subj, value, rev)
	if err != nil {
		if _, gerr := s.kv.Get(ctx, subj); errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
			return 0, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return 0, mapErr(err)
	}
	return n, nil
}

// Delete removes an object if its latest revision is rev (any revision when
// rev is 0). It returns the revision of the delete.
func (s *Store) Delete(ctx context.Context, k Key, rev uint64) error {
	subj, err := subject(k)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err = s.kv.Delete(ctx, subj, opts...)
	if err != nil && (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)) {
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return mapErr(err)
}

// LastRevision is the bucket's latest revision.
func (s *Store) LastRevision(ctx context.Context) (uint64, error) {
	st, err := s.kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("read bucket status: %w", err)
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		return bs.StreamInfo().State.LastSeq, nil
	}
	return 0, errors.New("read bucket status: not a JetStream bucket")
}

// List reads every object of a resource (in a namespace, or all when "")
// and the revision the result is complete at: a watch resumed from it
// misses nothing.
//
// It reads every stored message of the resource in revision order (one per
// key, the bucket keeps no history) and stops once it has read as far as
// the newest such message in the bucket, asked of the server after the
// watcher says it is done. The watcher's own word is not enough: it counts
// messages, and under concurrent writes a key rewritten while the list is
// read loses the message the count included (one value per key), so the
// count is reached before the key's new message arrives and the key would
// be missing. Reading up to the newest message cannot miss a key: every
// key's current message is at or below it, and is delivered once reached,
// as it exists by then and is not removed while current.
func (s *Store) List(ctx context.Context, resource, namespace string) ([]Entry, uint64, error) {
	rev, err := s.LastRevision(ctx)
	if err != nil {
		return nil, 0, err
	}
	f, err := filter(resource, namespace)
	if err != nil {
		return nil, 0, err
	}
	w, err := s.kv.WatchFiltered(ctx, []string{f}, jetstream.IncludeHistory())
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", resource, err)
	}
	defer w.Stop()
	latest := map[Key]Entry{}
	var read, until uint64 // highest revision read; read at least this far
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case u, ok := <-w.Updates():
			if !ok {
				return nil, 0, fmt.Errorf("list %s: watcher closed", resource)
			}
			e = u
		}
		if e != nil {
			read = max(read, e.Revision())
			if k, ok := parseSubject(e.Key()); ok {
				if e.Operation() == jetstream.KeyValuePut {
					latest[k] = Entry{Key: k, Value: e.Value(), Revision: e.Revision()}
				} else {
					delete(latest, k)
				}
			}
		}
		// Ask the server how far there is to read when the watcher thinks
		// it is done, and again whenever that point is reached.
		if e == nil || e.Delta() == 0 || until != 0 && read >= until {
			if until, err = s.lastRevisionOf(ctx, f); err != nil {
				return nil, 0, fmt.Errorf("list %s: %w", resource, err)
			}
			if read >= until {
				break
			}
		}
	}
	out := make([]Entry, 0, len(latest))
	for _, e := range latest {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Revision < out[j].Revision })
	return out, max(rev, read), nil
}

// lastRevisionOf is the revision of the newest message in the bucket whose
// key matches the filter, deletes included; 0 when there is none.
func (s *Store) lastRevisionOf(ctx context.Context, filter string) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, s.subjectPrefix+filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the newest message of %s: %w", filter, err)
	}
	return m.Sequence, nil
}

// EventType says what happened to a key.
type EventType int

const (
	Put EventType = iota + 1
	Deleted
)

// Event is one change seen by a watch. A Deleted event has no value.
type Event struct {
	Type  EventType
	Entry Entry
}

// Watch streams the changes to a resource (in a namespace, or all when "")
// made after revision since. The channel closes when ctx ends; a watch that
// fails otherwise sends nothing more and closes too, and the caller
// resumes from the last revision it saw.
//
// With one value kept per key, a resumed watch delivers each key's latest
// state rather than every step in between, which is all a reconciler needs.
func (s *Store) Watch(ctx context.Context, resource, namespace string, since uint64) (<-chan Event, error) {
	opts := []jetstream.WatchOpt{jetstream.ResumeFromRevision(since + 1)}
	f, err := filter(resource, namespace)
	if err != nil {
		return nil, err
	}
	w, err := s.kv.WatchFiltered(ctx, []string{f}, opts...)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", resource, err)
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // end of the backlog since `since`
				}
				k, ok := parseSubject(e.Key())
				if !ok {
					continue
				}
				ev := Event{Type: Put, Entry: Entry{Key: k, Value: e.Value(), Revision: e.Revision()}}
				if e.Operation() != jetstream.KeyValuePut {
					ev.Type = Deleted
					ev.Entry.Value = nil
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Ping checks the store answers, for /readyz.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.kv.Status(ctx)
	return err
}

// LastRevisionOf is the revision of the newest message of a resource (in a
// namespace, or all when ""), deletes included; 0 when there is none. A
// watch that has delivered this revision has delivered every change of the
// resource up to the bucket's revision read before calling it.
func (s *Store) LastRevisionOf(ctx context.Context, resource, namespace string) (uint64, error) {
	f, err := filter(resource, namespace)
	if err != nil {
		return 0, err
	}
	return s.lastRevisionOf(ctx, f)
}
