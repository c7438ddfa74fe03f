package agent

import (
	"k8s.io/client-go/kubernetes"

	"github.com/meshroot/meshroot/internal/kubeclient"
)

// clientsetKube is a client-go clientset (a fake one in these tests) as
// the agent's kubeclient.Interface: each typed client has the methods.
type clientsetKube struct{ cs kubernetes.Interface }

func (k clientsetKube) Secrets(ns string) kubeclient.SecretInterface {
	return k.cs.CoreV1().Secrets(ns)
}

func (k clientsetKube) ConfigMaps(ns string) kubeclient.ConfigMapInterface {
	return k.cs.CoreV1().ConfigMaps(ns)
}

func (k clientsetKube) ServiceAccounts(ns string) kubeclient.ServiceAccountInterface {
	return k.cs.CoreV1().ServiceAccounts(ns)
}

func (k clientsetKube) Deployments(ns string) kubeclient.DeploymentInterface {
	return k.cs.AppsV1().Deployments(ns)
}
