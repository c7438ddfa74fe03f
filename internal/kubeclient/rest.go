package kubeclient

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// codecs knows only the three API groups meshroot calls; it is built on
// first use, so a process that never talks to Kubernetes never builds it.
var codecs = sync.OnceValues(func() (serializer.CodecFactory, runtime.ParameterCodec) {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, authnv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("kubeclient: scheme: %v", err))
		}
	}
	return serializer.NewCodecFactory(s), runtime.NewParameterCodec(s)
})

// Client is a REST client for the resources of Interface and for
// TokenReviews. Its requests are those client-go's typed clients send.
type Client struct {
	core, apps, authn rest.Interface
}

// New returns a client for the API server cfg names. cfg is not modified.
func New(cfg *rest.Config) (*Client, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{}
	for _, g := range []struct {
		into    *rest.Interface
		apiPath string
		gv      schema.GroupVersion
	}{
		{&c.core, "/api", corev1.SchemeGroupVersion},
		{&c.apps, "/apis", appsv1.SchemeGroupVersion},
		{&c.authn, "/apis", authnv1.SchemeGroupVersion},
	} {
		rc, err := restClient(cfg, hc, g.apiPath, g.gv)
		if err != nil {
			return nil, err
		}
		*g.into = rc
	}
	return c, nil
}

func restClient(cfg *rest.Config, hc *http.Client, apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = apiPath
	c.GroupVersion = &gv
	cf, _ := codecs()
	c.NegotiatedSerializer = cf.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientForConfigAndClient(c, hc)
}

// Secrets implements Interface.
func (c *Client) Secrets(ns string) SecretInterface {
	return resource[*corev1.Secret]{c.core, ns, "secrets", func() *corev1.Secret { return &corev1.Secret{} }}
}

// ConfigMaps implements Interface.
func (c *Client) ConfigMaps(ns string) ConfigMapInterface {
	return resource[*corev1.ConfigMap]{c.core, ns, "configmaps", func() *corev1.ConfigMap { return &corev1.ConfigMap{} }}
}

// ServiceAccounts implements Interface.
func (c *Client) ServiceAccounts(ns string) ServiceAccountInterface {
	return serviceAccounts{c.core, ns}
}

// Deployments implements Interface.
func (c *Client) Deployments(ns string) DeploymentInterface {
	return resource[*appsv1.Deployment]{c.apps, ns, "deployments", func() *appsv1.Deployment { return &appsv1.Deployment{} }}
}

// TokenReviews returns the cluster-scoped TokenReview client.
func (c *Client) TokenReviews() TokenReviewInterface {
	return resource[*authnv1.TokenReview]{c.authn, "", "tokenreviews", func() *authnv1.TokenReview { return &authnv1.TokenReview{} }}
}

// object is what a resource holds.
type object interface {
	runtime.Object
	GetName() string
}

// resource is one resource in one namespace ("" when cluster-scoped).
type resource[T object] struct {
	c         rest.Interface
	namespace string
	name      string
	newObject func() T
}

func (r resource[T]) Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error) {
	_, pc := codecs()
	out := r.newObject()
	err := r.c.Get().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).Name(name).
		VersionedParams(&opts, pc).Do(ctx).Into(out)
	return out, err
}

func (r resource[T]) Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error) {
	_, pc := codecs()
	out := r.newObject()
	err := r.c.Post().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).
		VersionedParams(&opts, pc).Body(obj).Do(ctx).Into(out)
	return out, err
}

func (r resource[T]) Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error) {
	_, pc := codecs()
	out := r.newObject()
	err := r.c.Put().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).Name(obj.GetName()).
		VersionedParams(&opts, pc).Body(obj).Do(ctx).Into(out)
	return out, err
}

func (r resource[T]) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error) {
	_, pc := codecs()
	out := r.newObject()
	err := r.c.Patch(pt).NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).Name(name).
		SubResource(subresources...).VersionedParams(&opts, pc).Body(data).Do(ctx).Into(out)
	return out, err
}

type serviceAccounts struct {
	c         rest.Interface
	namespace string
}

func (s serviceAccounts) CreateToken(ctx context.Context, sa string, tr *authnv1.TokenRequest, opts metav1.CreateOptions) (*authnv1.TokenRequest, error) {
	_, pc := codecs()
	out := &authnv1.TokenRequest{}
	err := s.c.Post().Namespace(s.namespace).Resource("serviceaccounts").Name(sa).SubResource("token").
		VersionedParams(&opts, pc).Body(tr).Do(ctx).Into(out)
	return out, err
}
