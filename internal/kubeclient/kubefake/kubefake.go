// Package kubefake is an in-memory kubeclient.Interface for tests of
// pure logic and for benchmarks that run many agents in one process:
// ConfigMaps and Secrets by namespace and name, Deployments (Get, and a
// Patch that merges pod template annotations, counted) and service account
// tokens. Tests against Kubernetes itself use a real kube-apiserver.
package kubefake

import (
	"context"
	"encoding/json"
	"fmt"
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
	mu      sync.Mutex
	cms     map[string]*kubeclient.ConfigMap
	secrets map[string]*kubeclient.Secret
	deps    map[string]*kubeclient.Deployment
	patches int
	token   string
	// OnSecretWrite, when set before use, is called with every Secret
	// created or updated (a copy), under the client's lock.
	OnSecretWrite func(namespace string, s *kubeclient.Secret)
}

// New returns an empty cluster holding deps, whose token requests are
// answered with token.
func New(token string, deps ...*kubeclient.Deployment) *Clientset {
	k := &Clientset{cms: map[string]*kubeclient.ConfigMap{}, secrets: map[string]*kubeclient.Secret{}, deps: map[string]*kubeclient.Deployment{}, token: token}
	for _, d := range deps {
		k.deps[d.Namespace+"/"+d.Name] = d
	}
	return k
}

// Patches is how many Deployment patches the client received.
func (k *Clientset) Patches() int { k.mu.Lock(); defer k.mu.Unlock(); return k.patches }

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

// Secrets implements kubeclient.Interface.
func (k *Clientset) Secrets(ns string) kubeclient.SecretInterface { return memSecrets{k, ns} }

// ConfigMaps implements kubeclient.Interface.
func (k *Clientset) ConfigMaps(ns string) kubeclient.ConfigMapInterface { return memConfigMaps{k, ns} }

// ServiceAccounts implements kubeclient.Interface.
func (k *Clientset) ServiceAccounts(string) kubeclient.ServiceAccountInterface {
	return memServiceAccounts{k}
}

// Deployments implements kubeclient.Interface.
func (k *Clientset) Deployments(ns string) kubeclient.DeploymentInterface {
	return memDeployments{k, ns}
}

type memSecrets struct {
	k  *Clientset
	ns string
}

func (s memSecrets) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Secret, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if v, ok := s.k.secrets[s.ns+"/"+name]; ok {
		c := *v
		return &c, nil
	}
	return nil, notFound("secrets", name)
}

func (s memSecrets) Create(_ context.Context, v *kubeclient.Secret, _ metav1.CreateOptions) (*kubeclient.Secret, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if _, ok := s.k.secrets[s.ns+"/"+v.Name]; ok {
		return nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, v.Name)
	}
	c := *v
	s.k.secrets[s.ns+"/"+v.Name] = &c
	if s.k.OnSecretWrite != nil {
		w := c
		s.k.OnSecretWrite(s.ns, &w)
	}
	return v, nil
}

func (s memSecrets) Update(_ context.Context, v *kubeclient.Secret, _ metav1.UpdateOptions) (*kubeclient.Secret, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if _, ok := s.k.secrets[s.ns+"/"+v.Name]; !ok {
		return nil, notFound("secrets", v.Name)
	}
	c := *v
	s.k.secrets[s.ns+"/"+v.Name] = &c
	if s.k.OnSecretWrite != nil {
		w := c
		s.k.OnSecretWrite(s.ns, &w)
	}
	return v, nil
}

type memConfigMaps struct {
	k  *Clientset
	ns string
}

func (s memConfigMaps) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.ConfigMap, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if v, ok := s.k.cms[s.ns+"/"+name]; ok {
		c := *v
		return &c, nil
	}
	return nil, notFound("configmaps", name)
}

func (s memConfigMaps) Create(_ context.Context, v *kubeclient.ConfigMap, _ metav1.CreateOptions) (*kubeclient.ConfigMap, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if _, ok := s.k.cms[s.ns+"/"+v.Name]; ok {
		return nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "configmaps"}, v.Name)
	}
	c := *v
	s.k.cms[s.ns+"/"+v.Name] = &c
	return v, nil
}

func (s memConfigMaps) Update(_ context.Context, v *kubeclient.ConfigMap, _ metav1.UpdateOptions) (*kubeclient.ConfigMap, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if _, ok := s.k.cms[s.ns+"/"+v.Name]; !ok {
		return nil, notFound("configmaps", v.Name)
	}
	c := *v
	s.k.cms[s.ns+"/"+v.Name] = &c
	return v, nil
}

type memServiceAccounts struct{ k *Clientset }

func (s memServiceAccounts) CreateToken(_ context.Context, sa string, tr *authnv1.TokenRequest, _ metav1.CreateOptions) (*authnv1.TokenRequest, error) {
	out := tr.DeepCopy()
	out.Status.Token = s.k.token
	return out, nil
}

type memDeployments struct {
	k  *Clientset
	ns string
}

func (s memDeployments) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Deployment, error) {
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
func (s memDeployments) Patch(_ context.Context, name string, _ types.PatchType, data []byte, _ metav1.PatchOptions, _ ...string) (*kubeclient.Deployment, error) {
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
