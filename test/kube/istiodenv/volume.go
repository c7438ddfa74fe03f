package istiodenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// dataDirName is the symlink the kubelet swaps to publish a new version of
// a Secret volume; the user-visible files are symlinks through it.
const dataDirName = "..data"

// SecretVolume is a folder laid out as the kubelet lays out a Secret volume
// (its atomic writer): each key is a file in a timestamped folder
// "..2006_01_02_15_04_05.<digits>", the symlink "..data" points at the
// current timestamped folder, and each key is visible as "KEY ->
// ..data/KEY". Write publishes a new version with one rename of "..data",
// so a reader that resolves through the links never sees half of it.
type SecretVolume struct {
	// Dir is the mount point (istiod's ./etc/cacerts).
	Dir string
}

// Write publishes data as the volume's new content: a new timestamped
// folder with every key (mode 0600), a "..data_tmp" symlink to it renamed
// over "..data", then links for new keys, removal of links for keys that
// are gone, and removal of the previous timestamped folder. Data equal to
// the current content is not written again (the kubelet skips it too).
// As with the kubelet, a reader that resolved "..data" just before a swap
// may find the previous folder already removed; istiod reads again on the
// next change.
func (v *SecretVolume) Write(data map[string][]byte) error {
	if err := os.MkdirAll(v.Dir, 0o755); err != nil {
		return err
	}
	old, oldData, err := v.current()
	if err != nil {
		return err
	}
	if old != "" && maps.EqualFunc(oldData, data, bytes.Equal) {
		return nil
	}
	ts, err := os.MkdirTemp(v.Dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.")) // MkdirTemp adds digits, as the kubelet's name does
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	for k, val := range data {
		if k == "" || k != filepath.Base(k) || k[0] == '.' {
			return fmt.Errorf("secret key %q cannot be a file name in a volume", k)
		}
		if err := os.WriteFile(filepath.Join(ts, k), val, 0o600); err != nil {
			return err
		}
	}
	tmp := filepath.Join(v.Dir, "..data_tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(v.Dir, dataDirName)); err != nil {
		return err
	}
	for k := range data {
		link := filepath.Join(v.Dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDirName, k), link); err != nil {
			return err
		}
	}
	for k := range oldData {
		if _, ok := data[k]; !ok {
			if err := os.Remove(filepath.Join(v.Dir, k)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	if old != "" {
		return os.RemoveAll(filepath.Join(v.Dir, old))
	}
	return nil
}

// Read returns the volume's current content as a reader of the mount sees
// it (through "..data"), or nil when nothing was written yet.
func (v *SecretVolume) Read() (map[string][]byte, error) {
	_, data, err := v.current()
	return data, err
}

// current returns the timestamped folder "..data" points at and its files.
func (v *SecretVolume) current() (string, map[string][]byte, error) {
	target, err := os.Readlink(filepath.Join(v.Dir, dataDirName))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	entries, err := os.ReadDir(filepath.Join(v.Dir, target))
	if err != nil {
		return "", nil, err
	}
	data := make(map[string][]byte, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(v.Dir, target, e.Name()))
		if err != nil {
			return "", nil, err
		}
		data[e.Name()] = b
	}
	return target, data, nil
}

// syncer keeps a SecretVolume following a Secret as the kubelet does, with
// a configurable lag: the volume shows the newest version of the Secret
// that was observed at least lag ago. Paused, it writes nothing.
type syncer struct {
	client    kubernetes.Interface
	namespace string
	name      string
	vol       *SecretVolume

	mu       sync.Mutex
	lag      time.Duration
	paused   bool
	pending  []observed // versions seen and not yet written, oldest first
	seenRV   string
	applied  observed // the version in the volume
	syncs    int
	lastErr  error
	changed  chan struct{} // closed and replaced on every write
	stopped  chan struct{}
	stopOnce sync.Once
}

// observed is one version of the Secret and when the syncer first saw it.
type observed struct {
	rv   string
	data map[string][]byte
	seen time.Time
	at   time.Time // when it was written to the volume
}

// syncPoll is how often the syncer checks whether an observed version is
// due for the volume: a local check, no API request.
const syncPoll = 100 * time.Millisecond

func newSyncer(client kubernetes.Interface, namespace, name string, vol *SecretVolume, lag time.Duration) *syncer {
	return &syncer{client: client, namespace: namespace, name: name, vol: vol, lag: lag,
		changed: make(chan struct{}), stopped: make(chan struct{})}
}

// run follows the Secret until ctx ends: a watch records each version as
// it is observed (the kubelet's Secret manager watches too), and a ticker
// writes the versions that are due. Polling the Secret every 100 ms
// instead cost the apiserver, etcd and this process ~0.04 CPU-seconds per
// second per istiod, all test long (docs/performance.md, "Test suite").
func (s *syncer) run(ctx context.Context) {
	defer close(s.stopped)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.watch(ctx)
	}()
	defer func() { <-watched }()
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for {
		s.apply()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watch records the versions of the Secret until ctx ends, watching it
// again (from its current state) whenever a watch fails or ends.
func (s *syncer) watch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := s.client.CoreV1().Secrets(s.namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + s.name})
		if err != nil {
			if ctx.Err() == nil {
				s.setErr(fmt.Errorf("watching Secret %s/%s: %w", s.namespace, s.name, err))
			}
			pause(ctx)
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified:
				if sec, ok := ev.Object.(*corev1.Secret); ok {
					s.observe(sec)
				}
			case watch.Error:
				s.setErr(fmt.Errorf("watching Secret %s/%s: %v", s.namespace, s.name, apierrors.FromObject(ev.Object)))
			}
			// Deleted: the kubelet keeps the last content of a mounted
			// Secret, and so does the volume.
		}
		w.Stop()
		pause(ctx) // a watch that keeps ending at once must not spin
	}
}

// pause waits syncPoll, or until ctx ends.
func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(syncPoll):
	}
}

func (s *syncer) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

// observe records a version of the Secret, once.
func (s *syncer) observe(sec *corev1.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec.ResourceVersion != s.seenRV {
		s.seenRV = sec.ResourceVersion
		s.pending = append(s.pending, observed{rv: sec.ResourceVersion, data: maps.Clone(sec.Data), seen: time.Now()})
	}
}

// apply writes the volume if an observed version is due.
func (s *syncer) apply() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		return
	}
	due := -1
	for i, o := range s.pending {
		if now.Sub(o.seen) >= s.lag {
			due = i
		}
	}
	if due < 0 {
		return
	}
	o := s.pending[due]
	if err := s.vol.Write(o.data); err != nil {
		s.lastErr = fmt.Errorf("writing the volume %s: %w", s.vol.Dir, err)
		return
	}
	s.pending = slices.Delete(s.pending, 0, due+1)
	o.at = time.Now()
	s.applied = o
	s.syncs++
	s.lastErr = nil
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *syncer) state() (rv string, at time.Time, syncs int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied.rv, s.applied.at, s.syncs, s.lastErr
}

// waitFor waits until the volume holds resourceVersion rv (or any version,
// when rv is empty).
func (s *syncer) waitFor(ctx context.Context, rv string) error {
	for {
		s.mu.Lock()
		cur, ch, lastErr := s.applied.rv, s.changed, s.lastErr
		s.mu.Unlock()
		if cur != "" && (rv == "" || cur == rv) {
			return nil
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("volume has version %q, want %q: %w (last error: %v)", cur, rv, ctx.Err(), lastErr)
			}
			return fmt.Errorf("volume has version %q, want %q: %w", cur, rv, ctx.Err())
		case <-ch:
		case <-s.stopped:
			return errors.New("the volume syncer stopped")
		}
	}
}
