package agent

import (
	"context"
	"maps"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
)

// TestWriteSecretUpdate: an update replaces the data as a whole (no file
// of the old set lingers), keeps the Secret's other labels and
// annotations, and leaves the object it was read into as it was.
func TestWriteSecretUpdate(t *testing.T) {
	ctx := context.Background()
	kube := kubefake.New("")
	ref := SecretRef{Namespace: "istio-system", Name: "cacerts"}
	_, err := kube.Secrets(ref.Namespace).Create(ctx, &kubeclient.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, "team": "mesh"},
			Annotations: map[string]string{"note": "kept"}},
		Type: kubeclient.SecretTypeOpaque,
		Data: map[string][]byte{ca.CAKeyFile: []byte("old key"), "stale.pem": []byte("old")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prev, err := ReadSecret(ctx, kube, ref)
	if err != nil {
		t.Fatal(err)
	}
	before := maps.Clone(prev.Secret.Data)
	files := map[string][]byte{ca.CAKeyFile: []byte("new key"), ca.CACertFile: []byte("new cert")}
	out, err := WriteSecret(ctx, kube, ref, prev, ca.FormatIstio, files, map[string]string{"meshroot.io/serial": "02"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(out.Data, files, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("written data %v, want exactly %v", keysOf(out.Data), keysOf(files))
	}
	if out.Labels["team"] != "mesh" || out.Annotations["note"] != "kept" || out.Annotations["meshroot.io/serial"] != "02" {
		t.Errorf("labels %v, annotations %v", out.Labels, out.Annotations)
	}
	if !maps.EqualFunc(prev.Secret.Data, before, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Error("the Secret as read was changed by the write")
	}
	if _, ok := prev.Secret.Annotations["meshroot.io/serial"]; ok {
		t.Error("the write's annotation leaked into the Secret as read")
	}
	got, err := kube.Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil || string(got.Data[ca.CACertFile]) != "new cert" || got.Data["stale.pem"] != nil {
		t.Fatalf("stored Secret: %v, data %v", err, keysOf(got.Data))
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
