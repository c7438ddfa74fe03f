// Package kubeclient is the part of the Kubernetes API that meshroot
// calls: Secrets, ConfigMaps, service-account tokens and Deployments for
// the agent, TokenReviews for the server. It exists to keep client-go's
// full clientset out of meshroot's binaries: that clientset (and its
// scheme, which registers every built-in API group at package init) links
// some 270 packages and several MB of code that the agent and the server
// never call, and they cost memory at idle (docs/performance.md).
//
// The interfaces have the method names and options of client-go's typed
// clients, with the small object types of types.go; New builds the REST
// client, which sends the requests client-go's typed clients send.
package kubeclient

import (
	"context"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Interface is a cluster's API as the agent uses it.
type Interface interface {
	// Secrets in namespace.
	Secrets(namespace string) SecretInterface
	// ConfigMaps in namespace.
	ConfigMaps(namespace string) ConfigMapInterface
	// ServiceAccounts in namespace (token requests only).
	ServiceAccounts(namespace string) ServiceAccountInterface
	// Deployments in namespace (get and patch only).
	Deployments(namespace string) DeploymentInterface
}

// SecretInterface reads and writes Secrets of one namespace.
type SecretInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*Secret, error)
	Create(ctx context.Context, s *Secret, opts metav1.CreateOptions) (*Secret, error)
	Update(ctx context.Context, s *Secret, opts metav1.UpdateOptions) (*Secret, error)
	// UpdateMeta is Update with the API server asked to answer with the
	// stored Secret's metadata only (PartialObjectMetadata): the Secret
	// it returns holds that metadata and s's Type and Data (not copied),
	// which are what the server stored unless an admission webhook
	// changed them. A cacerts Secret holding a fleet's CRLs is ~1 MB, and
	// Update's answer carries all of it back to be decoded. An API
	// server that cannot answer so refuses before it writes (406), and
	// gets an Update; so does a Secret with StringData, which the server
	// folds into the data it stores. An answer with the whole Secret
	// (the Accept parameters dropped on the way) is returned as Update
	// returns it.
	UpdateMeta(ctx context.Context, s *Secret, opts metav1.UpdateOptions) (*Secret, error)
}

// ConfigMapInterface reads and writes ConfigMaps of one namespace.
type ConfigMapInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*ConfigMap, error)
	Create(ctx context.Context, cm *ConfigMap, opts metav1.CreateOptions) (*ConfigMap, error)
	Update(ctx context.Context, cm *ConfigMap, opts metav1.UpdateOptions) (*ConfigMap, error)
}

// ServiceAccountInterface requests tokens for service accounts of one
// namespace.
type ServiceAccountInterface interface {
	CreateToken(ctx context.Context, serviceAccountName string, tr *authnv1.TokenRequest, opts metav1.CreateOptions) (*authnv1.TokenRequest, error)
}

// DeploymentInterface reads and patches Deployments of one namespace.
type DeploymentInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*Deployment, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*Deployment, error)
}

// TokenReviewInterface asks the API server whether a token is valid.
type TokenReviewInterface interface {
	Create(ctx context.Context, tr *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error)
}
