package main

import (
	"context"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
)

// Each in-process agent writes to its own client-go fake clientset (an
// in-memory object tracker, no API server): with 1,000 clusters one real
// kube-apiserver per cluster is out of reach on this machine, and the
// Secret write path against a real one is covered by test/kube. The
// wrapper below records, after every successful write of the cacerts
// Secret, what the Secret now holds and when: "applied" means written to
// the Secret, not received over the watch.
//
// It also stands in for istiod: after each cacerts write it copies
// root-cert.pem into istio-system/istio-ca-root-cert, as an istiod that
// reloads at once would publish it. The agents therefore confirm istiod
// "loaded" and the rotation runs under the default istiod gate.

// applied is one observed write of a cluster's cacerts Secret.
type applied struct {
	at       time.Time
	sequence uint64 // meshroot.io/bundle-sequence
	rootID   string // meshroot.io/root-id: the root of the intermediate
	roots    int    // certificates in root-cert.pem
}

// recorder keeps the writes of one cluster's Secret.
type recorder struct {
	mu     sync.Mutex
	events []applied
	notify func() // called after every write (wakes the waiters)
}

func (r *recorder) add(s *corev1.Secret) {
	seq, _ := strconv.ParseUint(s.Annotations[ca.AnnotationBundleSequence], 10, 64)
	roots, _ := ca.ParseCerts(s.Data["root-cert.pem"])
	ev := applied{at: time.Now(), sequence: seq, rootID: s.Annotations[ca.AnnotationRootID], roots: len(roots)}
	r.mu.Lock()
	r.events = append(r.events, ev)
	if len(r.events) > 64 { // keep the tail; waiters look at recent writes
		r.events = append(r.events[:0:0], r.events[len(r.events)-32:]...)
	}
	r.mu.Unlock()
	r.notify()
}

// first returns the time of the first write at or after since that
// satisfies pred.
func (r *recorder) first(since time.Time, pred func(applied) bool) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if !ev.at.Before(since) && pred(ev) {
			return ev.at, true
		}
	}
	return time.Time{}, false
}

// last is the latest write, if any.
func (r *recorder) last() (applied, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return applied{}, false
	}
	return r.events[len(r.events)-1], true
}

// recordingKube is a fake clientset whose cacerts writes are recorded.
type recordingKube struct {
	*fake.Clientset
	rec *recorder
	ref agent.SecretRef
}

func newRecordingKube(rec *recorder) kubernetes.Interface {
	// The simple tracker: NewClientset's managed-fields tracker builds a
	// REST mapper on every update, which cost the bench more CPU than the
	// agents' own work.
	return &recordingKube{Clientset: fake.NewSimpleClientset(), rec: rec, ref: agent.DefaultSecret} //nolint:staticcheck // see above
}

// CoreV1 returns the fake's core client with recording Secrets.
func (k *recordingKube) CoreV1() corev1client.CoreV1Interface {
	return recordingCore{CoreV1Interface: k.Clientset.CoreV1(), k: k}
}

type recordingCore struct {
	corev1client.CoreV1Interface
	k *recordingKube
}

func (c recordingCore) Secrets(ns string) corev1client.SecretInterface {
	return recordingSecrets{SecretInterface: c.CoreV1Interface.Secrets(ns), k: c.k, ns: ns}
}

type recordingSecrets struct {
	corev1client.SecretInterface
	k  *recordingKube
	ns string
}

func (s recordingSecrets) Create(ctx context.Context, sec *corev1.Secret, o metav1.CreateOptions) (*corev1.Secret, error) {
	out, err := s.SecretInterface.Create(ctx, sec, o)
	s.written(ctx, out, err)
	return out, err
}

func (s recordingSecrets) Update(ctx context.Context, sec *corev1.Secret, o metav1.UpdateOptions) (*corev1.Secret, error) {
	out, err := s.SecretInterface.Update(ctx, sec, o)
	s.written(ctx, out, err)
	return out, err
}

// written records a successful cacerts write, then plays istiod.
func (s recordingSecrets) written(ctx context.Context, out *corev1.Secret, err error) {
	if err != nil || out == nil || s.ns != s.k.ref.Namespace || out.Name != s.k.ref.Name {
		return
	}
	s.k.rec.add(out)
	cms := s.k.Clientset.CoreV1().ConfigMaps(s.ns)
	data := map[string]string{"root-cert.pem": string(out.Data["root-cert.pem"])}
	cm, gerr := cms.Get(ctx, agent.RootCertConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(gerr):
		_, _ = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: agent.RootCertConfigMap, Namespace: s.ns}, Data: data}, metav1.CreateOptions{})
	case gerr == nil:
		cm.Data = data
		_, _ = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
}
