package main

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
)

// Each in-process agent writes to its own in-memory kubeclient.Interface
// (Secrets and ConfigMaps in maps, resourceVersion checked on update; no
// API server): with 1,000 clusters one real
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

func (r *recorder) add(s *kubeclient.Secret) {
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

// memKube is one cluster's API in memory: the agent's Secrets and
// ConfigMaps, no Deployments (so no istiod is rolled) and no tokens. The
// cacerts Secret's writes are recorded, then played to istiod.
type memKube struct {
	mu      sync.Mutex
	secrets map[string]*kubeclient.Secret
	cms     map[string]*kubeclient.ConfigMap
	rv      int
	rec     *recorder
	ref     agent.SecretRef
}

func newRecordingKube(rec *recorder) kubeclient.Interface {
	return &memKube{secrets: map[string]*kubeclient.Secret{}, cms: map[string]*kubeclient.ConfigMap{}, rec: rec, ref: agent.DefaultSecret}
}

func (k *memKube) Secrets(ns string) kubeclient.SecretInterface       { return memSecrets{k, ns} }
func (k *memKube) ConfigMaps(ns string) kubeclient.ConfigMapInterface { return memConfigMaps{k, ns} }
func (k *memKube) ServiceAccounts(string) kubeclient.ServiceAccountInterface {
	return memTokens{}
}
func (k *memKube) Deployments(string) kubeclient.DeploymentInterface { return memDeployments{} }

// put stores an object under key after checking its resourceVersion as
// the API server does (create: none there; update: the one read).
func put[T any](k *memKube, m map[string]*T, key string, meta *metav1.ObjectMeta, v *T, create bool, res string) error {
	cur, ok := m[key]
	switch {
	case create && ok:
		return apierrors.NewAlreadyExists(schema.GroupResource{Resource: res}, meta.Name)
	case !create && !ok:
		return apierrors.NewNotFound(schema.GroupResource{Resource: res}, meta.Name)
	case !create && cur != nil && meta.ResourceVersion != "" && meta.ResourceVersion != metaOf(cur).ResourceVersion:
		return apierrors.NewConflict(schema.GroupResource{Resource: res}, meta.Name, errors.New("changed since read"))
	}
	k.rv++
	meta.ResourceVersion = strconv.Itoa(k.rv)
	m[key] = v
	return nil
}

func metaOf(v any) *metav1.ObjectMeta {
	switch o := v.(type) {
	case *kubeclient.Secret:
		return &o.ObjectMeta
	case *kubeclient.ConfigMap:
		return &o.ObjectMeta
	}
	return &metav1.ObjectMeta{}
}

type memSecrets struct {
	k  *memKube
	ns string
}

func (s memSecrets) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Secret, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if v, ok := s.k.secrets[s.ns+"/"+name]; ok {
		return v.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (s memSecrets) Create(ctx context.Context, v *kubeclient.Secret, _ metav1.CreateOptions) (*kubeclient.Secret, error) {
	return s.put(ctx, v, true)
}

func (s memSecrets) Update(ctx context.Context, v *kubeclient.Secret, _ metav1.UpdateOptions) (*kubeclient.Secret, error) {
	return s.put(ctx, v, false)
}

// put writes the Secret; a write of cacerts is recorded and then played
// to istiod: root-cert.pem copied into istio-ca-root-cert.
func (s memSecrets) put(ctx context.Context, v *kubeclient.Secret, create bool) (*kubeclient.Secret, error) {
	c := v.DeepCopy()
	for k, d := range c.StringData {
		if c.Data == nil {
			c.Data = map[string][]byte{}
		}
		c.Data[k] = []byte(d)
	}
	c.StringData = nil
	s.k.mu.Lock()
	err := put(s.k, s.k.secrets, s.ns+"/"+c.Name, &c.ObjectMeta, c, create, "secrets")
	s.k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := c.DeepCopy()
	if s.ns == s.k.ref.Namespace && c.Name == s.k.ref.Name {
		s.k.rec.add(out)
		cms := memConfigMaps{s.k, s.ns}
		data := map[string]string{"root-cert.pem": string(out.Data["root-cert.pem"])}
		if cm, err := cms.Get(ctx, agent.RootCertConfigMap, metav1.GetOptions{}); err == nil {
			cm.Data = data
			_, _ = cms.Update(ctx, cm, metav1.UpdateOptions{})
		} else {
			_, _ = cms.Create(ctx, &kubeclient.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: agent.RootCertConfigMap, Namespace: s.ns}, Data: data}, metav1.CreateOptions{})
		}
	}
	return out, nil
}

type memConfigMaps struct {
	k  *memKube
	ns string
}

func (c memConfigMaps) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.ConfigMap, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if v, ok := c.k.cms[c.ns+"/"+name]; ok {
		return v.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (c memConfigMaps) Create(_ context.Context, v *kubeclient.ConfigMap, _ metav1.CreateOptions) (*kubeclient.ConfigMap, error) {
	return c.put(v, true)
}

func (c memConfigMaps) Update(_ context.Context, v *kubeclient.ConfigMap, _ metav1.UpdateOptions) (*kubeclient.ConfigMap, error) {
	return c.put(v, false)
}

func (c memConfigMaps) put(v *kubeclient.ConfigMap, create bool) (*kubeclient.ConfigMap, error) {
	cp := v.DeepCopy()
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if err := put(c.k, c.k.cms, c.ns+"/"+cp.Name, &cp.ObjectMeta, cp, create, "configmaps"); err != nil {
		return nil, err
	}
	return cp.DeepCopy(), nil
}

// memTokens issues no tokens (the bench runs no istiod probe).
type memTokens struct{}

func (memTokens) CreateToken(context.Context, string, *authnv1.TokenRequest, metav1.CreateOptions) (*authnv1.TokenRequest, error) {
	return nil, errors.New("no service-account tokens in the bench")
}

// memDeployments finds no istiod, so none is rolled.
type memDeployments struct{}

func (memDeployments) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Deployment, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "apps", Resource: "deployments"}, name)
}

func (memDeployments) Patch(_ context.Context, name string, _ types.PatchType, _ []byte, _ metav1.PatchOptions, _ ...string) (*kubeclient.Deployment, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "apps", Resource: "deployments"}, name)
}
