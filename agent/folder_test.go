package agent

import (
	"os"
	"path/filepath"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/internal/kubeclient"
)

// TestFolderSecretLifecycle: the cacerts Secret written to a folder reads
// back with its labels and annotations, each file name is a symlink
// through ..data to a 0600 file, an update swaps the whole set (a name
// dropped from the set disappears), and a stale resourceVersion is a
// conflict, as with the API server.
func TestFolderSecretLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	kube, err := NewFolder(dir, DefaultSecret)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	secrets := kube.Secrets("istio-system")
	if _, err := secrets.Get(ctx, "cacerts", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("empty folder: %v, want NotFound", err)
	}
	cur, err := ReadSecret(ctx, kube, DefaultSecret)
	if err != nil || cur.Secret != nil {
		t.Fatalf("ReadSecret on an empty folder: %+v %v", cur, err)
	}
	s := &kubeclient.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: "istio-system", Labels: map[string]string{LabelManagedBy: ManagedBy}, Annotations: map[string]string{"a": "1"}},
		Data:       map[string][]byte{"ca-cert.pem": []byte("cert1"), "ca-key.pem": []byte("key1"), "old.pem": []byte("x")},
	}
	created, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	checkFile := func(name, want string) {
		t.Helper()
		link, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || link != filepath.Join("..data", name) {
			t.Errorf("%s: link %q %v, want ..data/%s", name, link, err, name)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", name, b, err, want)
		}
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v %v, want 0600", name, fi.Mode(), err)
		}
	}
	checkFile("ca-cert.pem", "cert1")
	checkFile("ca-key.pem", "key1")
	firstData, _ := os.Readlink(filepath.Join(dir, "..data"))

	got, err := secrets.Get(ctx, "cacerts", metav1.GetOptions{})
	if err != nil || got.Labels[LabelManagedBy] != ManagedBy || got.Annotations["a"] != "1" || string(got.Data["ca-key.pem"]) != "key1" {
		t.Fatalf("read back: %+v %v", got, err)
	}
	next := got.DeepCopy()
	next.Data = map[string][]byte{"ca-cert.pem": []byte("cert2"), "ca-key.pem": []byte("key2")}
	if _, err := secrets.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	checkFile("ca-cert.pem", "cert2")
	checkFile("ca-key.pem", "key2")
	if _, err := os.Lstat(filepath.Join(dir, "old.pem")); !os.IsNotExist(err) {
		t.Errorf("old.pem left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, firstData)); !os.IsNotExist(err) {
		t.Errorf("the previous data folder %s is left behind: %v", firstData, err)
	}
	// created carries the first resourceVersion: writing it now would
	// overwrite the update.
	if _, err := secrets.Update(ctx, created, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("update with a stale resourceVersion: %v, want Conflict", err)
	}

	// The federated ConfigMap goes to a subfolder; the Secret's files stay.
	cms := kube.ConfigMaps("istio-system")
	if _, err := cms.Create(ctx, &kubeclient.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: FederatedConfigMap}, Data: map[string]string{"peer.example": "PEM"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, FederatedConfigMap, "peer.example")); err != nil || string(b) != "PEM" {
		t.Errorf("federated ConfigMap file: %q %v", b, err)
	}
	checkFile("ca-cert.pem", "cert2")
	if _, err := kube.Deployments("istio-system").Get(ctx, "istiod", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("istiod next to a folder: %v, want NotFound", err)
	}
	bad := &kubeclient.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts"}, Data: map[string][]byte{"../escape": nil}}
	bad.ResourceVersion = "2"
	if _, err := secrets.Update(ctx, bad, metav1.UpdateOptions{}); err == nil {
		t.Error("a key that is a path was written")
	}
}
