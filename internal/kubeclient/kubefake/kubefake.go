// Package kubefake is an in-memory kubeclient.Interface for tests of
// pure logic and for benchmarks that run many agents in one process:
// Secrets and ConfigMaps by namespace and name, with resourceVersion
// checked on update as the API server does; Deployments (Get, and a Patch
// that merges pod template annotations, counted); service account tokens.
// Tests against Kubernetes itself use a real kube-apiserver.
package kubefake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshroot/meshroot/internal/kubeclient"
)

// Clientset is the in-memory cluster. Its zero value is not usable: call
// New.
type Clientset struct {
	// OnSecretWrite, when set before use, is called after every Secret
	// created or updated, with the Secret as stored, which it must not
	// change (a stored Secret is never changed: a write stores a new
	// one). It may keep it, and call the client (the lock is not held).
	// It gets no copy of its own: at 1,000 clusters a cacerts Secret is
	// ~1 MB, and bench-fleet's recorder, which runs in the agents'
	// process, would count copying it as the agents' work.
	OnSecretWrite func(ctx context.Context, namespace string, s *kubeclient.Secret)

	// ShareData, when set before use, makes a Secret write keep the
	// byte slices of the data it was given instead of copies of them
	// (the map and the metadata are still copied). The writer must not
	// change a slice after writing it. The agent never does: the Secret
	// it knows after a write holds the slices it sent (agent/knownsecret.go),
	// and planning ca-crl.pem only reads the file it starts from
	// (TestPlanFromLastMatchesWhole). At 1,000 clusters a cacerts Secret
	// is ~1 MB, and storing a copy of it is the API server's work, which
	// bench-fleet's in-memory clusters would otherwise count as the
	// agents'. Reads (Get) still return copies.
	ShareData bool

	mu      sync.Mutex
	cms     map[string]*kubeclient.ConfigMap
	secrets map[string]*kubeclient.Secret
	deps    map[string]*kubeclient.Deployment
	rv      int
	patches int
	token   string

	// secretGets and secretWrites count Secret reads and stored writes
	// (SecretGets, SecretWrites).
	secretGets, secretWrites int
}

// New returns an empty cluster holding deps. Token requests are answered
// with token, or refused when it is empty.
func New(token string, deps ...*kubeclient.Deployment) *Clientset {
	k := &Clientset{cms: map[string]*kubeclient.ConfigMap{}, secrets: map[string]*kubeclient.Secret{}, deps: map[string]*kubeclient.Deployment{}, token: token}
	for _, d := range deps {
		k.deps[d.Namespace+"/"+d.Name] = d
	}
	return k
}

// Patches is how many Deployment patches the client received.
func (k *Clientset) Patches() int { k.mu.Lock(); defer k.mu.Unlock(); return k.patches }

// PutConfigMap creates the ConfigMap ns/name with data, or replaces the
// data of the one there: what a writer outside the code under test
// writes (istiod publishing its roots in istio-ca-root-cert).
func (k *Clientset) PutConfigMap(ctx context.Context, ns, name string, data map[string]string) error {
	cms := k.ConfigMaps(ns)
	if cm, err := cms.Get(ctx, name, metav1.GetOptions{}); err == nil {
		cm.Data = data
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	}
	_, err := cms.Create(ctx, &kubeclient.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}, metav1.CreateOptions{})
	return err
}

// SecretGets returns how many times a Secret was read (Get), found or not.
func (k *Clientset) SecretGets() int { k.mu.Lock(); defer k.mu.Unlock(); return k.secretGets }

// SecretWrites returns how many Secret creates and updates were stored.
func (k *Clientset) SecretWrites() int { k.mu.Lock(); defer k.mu.Unlock(); return k.secretWrites }

// DeleteConfigMap removes a ConfigMap (not part of kubeclient.Interface).
func (k *Clientset) DeleteConfigMap(ns, name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.cms[ns+"/"+name]; !ok {
		return notFound("configmaps", name)
	}
	delete(k.cms, ns+"/"+name)
	return nil
}

func notFound(res, name string) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: res}, name)
}

// put stores v under key after checking its resourceVersion as the API
// server does (create: nothing there; update: the version read, if set).
// The caller holds k.mu.
func put[T any](k *Clientset, m map[string]*T, key string, meta *metav1.ObjectMeta, v *T, create bool, res string, metaOf func(*T) *metav1.ObjectMeta) error {
	cur, ok := m[key]
	switch {
	case create && ok:
		return apierrors.NewAlreadyExists(schema.GroupResource{Resource: res}, meta.Name)
	case !create && !ok:
		return notFound(res, meta.Name)
	case !create && meta.ResourceVersion != "" && meta.ResourceVersion != metaOf(cur).ResourceVersion:
		return apierrors.NewConflict(schema.GroupResource{Resource: res}, meta.Name, errors.New("changed since read"))
	}
	k.rv++
	meta.ResourceVersion = strconv.Itoa(k.rv)
	m[key] = v
	return nil
}

// Secrets implements kubeclient.Interface.
func (k *Clientset) Secrets(ns string) kubeclient.SecretInterface { return secrets{k, ns} }

// ConfigMaps implements kubeclient.Interface.
func (k *Clientset) ConfigMaps(ns string) kubeclient.ConfigMapInterface { return configMaps{k, ns} }

// ServiceAccounts implements kubeclient.Interface.
func (k *Clientset) ServiceAccounts(string) kubeclient.ServiceAccountInterface {
	return serviceAccounts{k}
}

// Deployments implements kubeclient.Interface.
func (k *Clientset) Deployments(ns string) kubeclient.DeploymentInterface { return deployments{k, ns} }

type secrets struct {
	k  *Clientset
	ns string
}

func (s secrets) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Secret, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	s.k.secretGets++
	if v, ok := s.k.secrets[s.ns+"/"+name]; ok {
		return v.DeepCopy(), nil
	}
	return nil, notFound("secrets", name)
}

func (s secrets) Create(ctx context.Context, v *kubeclient.Secret, _ metav1.CreateOptions) (*kubeclient.Secret, error) {
	return s.put(ctx, v, true)
}

func (s secrets) Update(ctx context.Context, v *kubeclient.Secret, _ metav1.UpdateOptions) (*kubeclient.Secret, error) {
	return s.put(ctx, v, false)
}

// UpdateMeta stores v as Update does and answers as an API server asked
// for PartialObjectMetadata: the stored metadata, with v's type and data
// (not copied).
func (s secrets) UpdateMeta(ctx context.Context, v *kubeclient.Secret, _ metav1.UpdateOptions) (*kubeclient.Secret, error) {
	if v != nil && len(v.StringData) > 0 {
		return s.put(ctx, v, false)
	}
	stored, err := s.store(ctx, v, false)
	if err != nil {
		return nil, err
	}
	return &kubeclient.Secret{TypeMeta: v.TypeMeta, ObjectMeta: *stored.ObjectMeta.DeepCopy(), Immutable: v.Immutable, Type: v.Type, Data: v.Data}, nil
}

// put stores the Secret and answers with a copy of what it stored.
func (s secrets) put(ctx context.Context, v *kubeclient.Secret, create bool) (*kubeclient.Secret, error) {
	stored, err := s.store(ctx, v, create)
	if err != nil {
		return nil, err
	}
	return stored.DeepCopy(), nil
}

// store stores the Secret with stringData folded into data, as the API
// server does, then tells OnSecretWrite. It returns the stored Secret,
// which is never changed (a write stores a new one).
func (s secrets) store(ctx context.Context, v *kubeclient.Secret, create bool) (*kubeclient.Secret, error) {
	var c *kubeclient.Secret
	if s.k.ShareData {
		c = v.CopySharingData()
	} else {
		c = v.DeepCopy()
	}
	c.Namespace = s.ns
	for key, d := range c.StringData {
		if c.Data == nil {
			c.Data = map[string][]byte{}
		}
		c.Data[key] = []byte(d)
	}
	c.StringData = nil
	s.k.mu.Lock()
	err := put(s.k, s.k.secrets, s.ns+"/"+c.Name, &c.ObjectMeta, c, create, "secrets", func(x *kubeclient.Secret) *metav1.ObjectMeta { return &x.ObjectMeta })
	if err == nil {
		s.k.secretWrites++
	}
	s.k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if s.k.OnSecretWrite != nil {
		s.k.OnSecretWrite(ctx, s.ns, c)
	}
	return c, nil
}

type configMaps struct {
	k  *Clientset
	ns string
}

func (c configMaps) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.ConfigMap, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if v, ok := c.k.cms[c.ns+"/"+name]; ok {
		return v.DeepCopy(), nil
	}
	return nil, notFound("configmaps", name)
}

func (c configMaps) Create(_ context.Context, v *kubeclient.ConfigMap, _ metav1.CreateOptions) (*kubeclient.ConfigMap, error) {
	return c.put(v, true)
}

func (c configMaps) Update(_ context.Context, v *kubeclient.ConfigMap, _ metav1.UpdateOptions) (*kubeclient.ConfigMap, error) {
	return c.put(v, false)
}

func (c configMaps) put(v *kubeclient.ConfigMap, create bool) (*kubeclient.ConfigMap, error) {
	cp := v.DeepCopy()
	cp.Namespace = c.ns
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if err := put(c.k, c.k.cms, c.ns+"/"+cp.Name, &cp.ObjectMeta, cp, create, "configmaps", func(x *kubeclient.ConfigMap) *metav1.ObjectMeta { return &x.ObjectMeta }); err != nil {
		return nil, err
	}
	return cp.DeepCopy(), nil
}

type serviceAccounts struct{ k *Clientset }

func (s serviceAccounts) CreateToken(_ context.Context, sa string, tr *authnv1.TokenRequest, _ metav1.CreateOptions) (*authnv1.TokenRequest, error) {
	if s.k.token == "" {
		return nil, fmt.Errorf("kubefake: no service account tokens (service account %s)", sa)
	}
	out := tr.DeepCopy()
	out.Status.Token = s.k.token
	return out, nil
}

type deployments struct {
	k  *Clientset
	ns string
}

func (s deployments) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Deployment, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if v, ok := s.k.deps[s.ns+"/"+name]; ok {
		c := *v
		return &c, nil
	}
	return nil, notFound("deployments", name)
}

// Patch understands the one patch the agent sends: pod template
// annotations, merged.
func (s deployments) Patch(_ context.Context, name string, _ types.PatchType, data []byte, _ metav1.PatchOptions, _ ...string) (*kubeclient.Deployment, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	d, ok := s.k.deps[s.ns+"/"+name]
	if !ok {
		return nil, notFound("deployments", name)
	}
	var p struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("kubefake: patch: %w", err)
	}
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	for k, v := range p.Spec.Template.Metadata.Annotations {
		d.Spec.Template.Annotations[k] = v
	}
	s.k.patches++
	c := *d
	return &c, nil
}
