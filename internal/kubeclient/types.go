package kubeclient

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// These are the objects meshroot reads and writes, with the JSON of their
// core/v1 and apps/v1 counterparts. They are declared here rather than
// taken from k8s.io/api/core/v1 because that package's code for its ~100
// other kinds (pods, services, ...) is linked with any one of them, about
// 4 MB of binary that the agent would map and never run. Secret and
// ConfigMap carry every field of theirs, so that a read, change and
// update never drops one; Deployment only what the agent reads.

// Secret is a core/v1 Secret.
type Secret struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Immutable         *bool             `json:"immutable,omitempty"`
	Data              map[string][]byte `json:"data,omitempty"`
	StringData        map[string]string `json:"stringData,omitempty"`
	Type              string            `json:"type,omitempty"`
}

// Secret types meshroot writes.
const (
	SecretTypeOpaque = "Opaque"
	SecretTypeTLS    = "kubernetes.io/tls"
)

// ConfigMap is a core/v1 ConfigMap.
type ConfigMap struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Immutable         *bool             `json:"immutable,omitempty"`
	Data              map[string]string `json:"data,omitempty"`
	BinaryData        map[string][]byte `json:"binaryData,omitempty"`
}

// Deployment is the part of an apps/v1 Deployment the agent reads: its
// containers' environment (istiod's ISTIO_MULTIROOT_MESH). Never write one
// back: it is partial.
type Deployment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              DeploymentSpec `json:"spec"`
}

// DeploymentSpec is the part of a Deployment's spec the agent reads.
type DeploymentSpec struct {
	Template PodTemplate `json:"template"`
}

// PodTemplate is the part of a pod template the agent reads.
type PodTemplate struct {
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodSpec `json:"spec"`
}

// PodSpec is the part of a pod spec the agent reads.
type PodSpec struct {
	Containers []Container `json:"containers"`
}

// Container is a container's name and literal environment.
type Container struct {
	Name string   `json:"name"`
	Env  []EnvVar `json:"env,omitempty"`
}

// EnvVar is a literal environment variable (valueFrom is not read).
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}
