package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshroot/meshroot/internal/kubeclient"
)

// RestartMode says when the agent rolls istiod after writing cacerts.
type RestartMode string

// Restart modes.
const (
	// RestartAuto rolls istiod when it cannot pick the change up by itself:
	// when cacerts was just created (istiod decides between self-signed and
	// plugged-in certificates at start), or when the root set changed and
	// istiod does not run with ISTIO_MULTIROOT_MESH=true or the new set is
	// neither a superset nor a subset of the old.
	RestartAuto RestartMode = "auto"
	// RestartAlways rolls istiod after every write.
	RestartAlways RestartMode = "always"
	// RestartNever leaves istiod alone.
	RestartNever RestartMode = "never"
)

// ParseRestartMode parses auto, always or never.
func ParseRestartMode(s string) (RestartMode, error) {
	switch m := RestartMode(s); m {
	case RestartAuto, RestartAlways, RestartNever:
		return m, nil
	case "":
		return RestartAuto, nil
	}
	return "", fmt.Errorf("--restart-istiod %q: use auto, always or never", s)
}

// AnnotationRestartedAt is set on istiod's pod template to roll it.
const AnnotationRestartedAt = "meshroot.io/restartedAt"

// rootChange describes how the root set changes with a write.
type rootChange struct {
	created       bool // there was no cacerts before
	changed       bool // the root set differs
	supersetOrSub bool // new ⊇ old or new ⊆ old
}

func compareRoots(old, new []*x509.Certificate, created bool) rootChange {
	if created {
		return rootChange{created: true, changed: true}
	}
	in := func(c *x509.Certificate, set []*x509.Certificate) bool {
		for _, s := range set {
			if bytes.Equal(s.Raw, c.Raw) {
				return true
			}
		}
		return false
	}
	oldInNew, newInOld := true, true
	for _, c := range old {
		oldInNew = oldInNew && in(c, new)
	}
	for _, c := range new {
		newInOld = newInOld && in(c, old)
	}
	return rootChange{changed: !(oldInNew && newInOld), supersetOrSub: oldInNew || newInOld}
}

// istiod is the Deployment the agent may roll.
type istiod struct {
	kube      kubeclient.Interface
	namespace string
	name      string
}

// multiRoot reports whether istiod runs with ISTIO_MULTIROOT_MESH=true, and
// whether the Deployment exists.
func (d istiod) multiRoot(ctx context.Context) (multi, exists bool, err error) {
	dep, err := d.kube.Deployments(d.namespace).Get(ctx, d.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("read Deployment %s/%s: %w", d.namespace, d.name, err)
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == "ISTIO_MULTIROOT_MESH" && e.Value == "true" {
				return true, true, nil
			}
		}
	}
	return false, true, nil
}

// decide says whether to roll istiod, and why.
func (d istiod) decide(ctx context.Context, mode RestartMode, ch rootChange) (bool, string, error) {
	if mode == RestartNever {
		return false, "", nil
	}
	multi, exists, err := d.multiRoot(ctx)
	if err != nil || !exists {
		return false, "", err
	}
	switch {
	case mode == RestartAlways:
		return true, "--restart-istiod=always", nil
	case ch.created:
		return true, "cacerts was created; istiod reads plugged-in certificates at start", nil
	case ch.changed && !multi:
		return true, "the root set changed and istiod does not run with ISTIO_MULTIROOT_MESH=true", nil
	case ch.changed && !ch.supersetOrSub:
		return true, "the new root set is neither a superset nor a subset of the old", nil
	}
	return false, "", nil
}

// restart rolls istiod by stamping its pod template.
func (d istiod) restart(ctx context.Context, now time.Time) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, AnnotationRestartedAt, now.UTC().Format(time.RFC3339))
	_, err := d.kube.Deployments(d.namespace).Patch(ctx, d.name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("restart Deployment %s/%s: %w", d.namespace, d.name, err)
	}
	return nil
}
