package kubeclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// The group versions meshroot calls.
var (
	coreV1  = schema.GroupVersion{Version: "v1"}
	appsV1  = schema.GroupVersion{Group: "apps", Version: "v1"}
	authnV1 = authnv1.SchemeGroupVersion
)

// codecs knows the request options and the Status errors of the three
// group versions (objects are plain JSON); it is built on first use, so a
// process that never talks to Kubernetes never builds it.
var codecs = sync.OnceValues(func() (serializer.CodecFactory, runtime.ParameterCodec) {
	s := runtime.NewScheme()
	for _, gv := range []schema.GroupVersion{coreV1, appsV1, authnV1} {
		metav1.AddToGroupVersion(s, gv)
	}
	return serializer.NewCodecFactory(s), runtime.NewParameterCodec(s)
})

// Client is a REST client for the resources of Interface and for
// TokenReviews. Its requests are those client-go's typed clients send,
// with JSON bodies.
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
		{&c.core, "/api", coreV1},
		{&c.apps, "/apis", appsV1},
		{&c.authn, "/apis", authnV1},
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
	c.ContentType = "application/json"
	c.AcceptContentTypes = "application/json"
	cf, _ := codecs()
	c.NegotiatedSerializer = cf.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientForConfigAndClient(c, hc)
}

// Secrets implements Interface.
func (c *Client) Secrets(ns string) SecretInterface {
	return secrets{resource[Secret, *Secret]{c.core, coreV1.WithKind("Secret"), ns, "secrets"}}
}

// ConfigMaps implements Interface.
func (c *Client) ConfigMaps(ns string) ConfigMapInterface {
	return resource[ConfigMap, *ConfigMap]{c.core, coreV1.WithKind("ConfigMap"), ns, "configmaps"}
}

// ServiceAccounts implements Interface.
func (c *Client) ServiceAccounts(ns string) ServiceAccountInterface {
	return serviceAccounts{c.core, ns}
}

// Deployments implements Interface.
func (c *Client) Deployments(ns string) DeploymentInterface {
	return resource[Deployment, *Deployment]{c.apps, appsV1.WithKind("Deployment"), ns, "deployments"}
}

// TokenReviews returns the cluster-scoped TokenReview client.
func (c *Client) TokenReviews() TokenReviewInterface {
	return resource[authnv1.TokenReview, *authnv1.TokenReview]{c.authn, authnV1.WithKind("TokenReview"), "", "tokenreviews"}
}

// object is a pointer to what a resource holds.
type object[T any] interface {
	*T
	GetName() string
	GetObjectKind() schema.ObjectKind
}

// resource is one resource in one namespace ("" when cluster-scoped).
type resource[T any, P object[T]] struct {
	c         rest.Interface
	kind      schema.GroupVersionKind
	namespace string
	name      string
}

func (r resource[T, P]) Get(ctx context.Context, name string, opts metav1.GetOptions) (P, error) {
	_, pc := codecs()
	return decode[T, P](r.c.Get().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).Name(name).
		VersionedParams(&opts, pc).Do(ctx))
}

func (r resource[T, P]) Create(ctx context.Context, obj P, opts metav1.CreateOptions) (P, error) {
	body, err := r.encode(obj)
	if err != nil {
		return nil, err
	}
	_, pc := codecs()
	return decode[T, P](r.c.Post().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).
		VersionedParams(&opts, pc).Body(body).Do(ctx))
}

func (r resource[T, P]) Update(ctx context.Context, obj P, opts metav1.UpdateOptions) (P, error) {
	body, err := r.encode(obj)
	if err != nil {
		return nil, err
	}
	_, pc := codecs()
	return decode[T, P](r.c.Put().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).Name(obj.GetName()).
		VersionedParams(&opts, pc).Body(body).Do(ctx))
}

func (r resource[T, P]) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (P, error) {
	_, pc := codecs()
	return decode[T, P](r.c.Patch(pt).NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.name).Name(name).
		SubResource(subresources...).VersionedParams(&opts, pc).Body(data).Do(ctx))
}

// secrets are the Secrets of one namespace.
type secrets struct {
	resource[Secret, *Secret]
}

// acceptMetadata asks for an object's metadata only, as
// PartialObjectMetadata (meta.k8s.io/v1: Kubernetes 1.15 and later).
const acceptMetadata = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

// UpdateMeta implements SecretInterface.
func (r secrets) UpdateMeta(ctx context.Context, s *Secret, opts metav1.UpdateOptions) (*Secret, error) {
	if s != nil && len(s.StringData) > 0 {
		return r.Update(ctx, s, opts) // the server folds stringData into the data it stores
	}
	body, err := r.encode(s)
	if err != nil {
		return nil, err
	}
	_, pc := codecs()
	res := r.c.Put().Namespace(r.namespace).Resource(r.name).Name(s.GetName()).
		VersionedParams(&opts, pc).SetHeader("Accept", acceptMetadata).Body(body).Do(ctx)
	raw, err := res.Raw()
	if err != nil {
		err = res.Error() // the Status in the body, when there is one
		if apierrors.IsNotAcceptable(err) {
			// Refused at content negotiation, before the update: no
			// PartialObjectMetadata here. The whole answer, then.
			return r.Update(ctx, s, opts)
		}
		return nil, err
	}
	var meta metav1.PartialObjectMetadata
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("kubeclient: decode the answer to an update of Secret %s/%s: %w", r.namespace, s.GetName(), err)
	}
	switch meta.Kind {
	case "PartialObjectMetadata":
		return &Secret{TypeMeta: s.TypeMeta, ObjectMeta: meta.ObjectMeta, Immutable: s.Immutable, Type: s.Type, Data: s.Data}, nil
	case "Secret":
		// The update was made, and answered as Update's is (something
		// between the client and the API server dropped the request's
		// Accept parameters): that answer is as good.
		out := new(Secret)
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("kubeclient: decode the answer to an update of Secret %s/%s: %w", r.namespace, s.GetName(), err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("kubeclient: update Secret %s/%s: the API server answered with a %q, not the PartialObjectMetadata asked for", r.namespace, s.GetName(), meta.Kind)
}

// encode is obj's JSON with its kind and apiVersion set.
func (r resource[T, P]) encode(obj P) ([]byte, error) {
	if obj == nil {
		return nil, fmt.Errorf("kubeclient: no %s to send", r.kind.Kind)
	}
	obj.GetObjectKind().SetGroupVersionKind(r.kind)
	return json.Marshal(obj)
}

// decode is the object in a response, or the response's error (an API
// status error, as client-go's typed clients return).
func decode[T any, P object[T]](res rest.Result) (P, error) {
	raw, err := res.Raw()
	if err != nil {
		return nil, res.Error() // the Status in the body, when there is one
	}
	out := P(new(T))
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("kubeclient: decode %T: %w", out, err)
	}
	return out, nil
}

type serviceAccounts struct {
	c         rest.Interface
	namespace string
}

func (s serviceAccounts) CreateToken(ctx context.Context, sa string, tr *authnv1.TokenRequest, opts metav1.CreateOptions) (*authnv1.TokenRequest, error) {
	if tr == nil {
		return nil, fmt.Errorf("kubeclient: no TokenRequest to send")
	}
	tr.SetGroupVersionKind(authnV1.WithKind("TokenRequest"))
	body, err := json.Marshal(tr)
	if err != nil {
		return nil, err
	}
	_, pc := codecs()
	return decode[authnv1.TokenRequest, *authnv1.TokenRequest](s.c.Post().Namespace(s.namespace).Resource("serviceaccounts").
		Name(sa).SubResource("token").VersionedParams(&opts, pc).Body(body).Do(ctx))
}
