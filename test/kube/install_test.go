package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// TestClusterInstall writes cacerts into a real cluster without an agent,
// through the server, replaces it on a second run, and leaves a Secret it
// did not write alone.
func TestClusterInstall(t *testing.T) {
	east := kubeenv.Start(t, "east")
	east.EnsureNamespace(t, meshNS)
	s := startServer(t, "")
	s.cli("cluster", "add", "east")

	out := s.cli("cluster", "install", "east", "--kubeconfig", east.KubeconfigPath, "--restart-istiod", "never")
	first := mustCACerts(t, east)
	if !strings.Contains(out, first.serial) {
		t.Errorf("install output does not name serial %s: %s", first.serial, out)
	}
	if first.cert.Subject.CommonName != "east" || !sameCerts(first.roots, s.bundle()) {
		t.Errorf("installed intermediate: CN %q, roots match server: %v", first.cert.Subject.CommonName, sameCerts(first.roots, s.bundle()))
	}

	s.cli("cluster", "install", "east", "--kubeconfig", east.KubeconfigPath, "--restart-istiod", "never")
	second := mustCACerts(t, east)
	if second.serial == first.serial || second.secret.UID != first.secret.UID {
		t.Errorf("second install: serial %s (was %s), UID %s (was %s); want a new serial in the same Secret", second.serial, first.serial, second.secret.UID, first.secret.UID)
	}

	// A cacerts Secret meshroot did not write is refused (exit 3) and kept.
	ctx := t.Context()
	secrets := east.Client.CoreV1().Secrets(meshNS)
	if err := secrets.Delete(ctx, "cacerts", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	hand := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: meshNS}, Data: map[string][]byte{"ca-cert.pem": []byte("by hand")}}
	if _, err := secrets.Create(ctx, hand, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := s.cliResult("cluster", "install", "east", "--kubeconfig", east.KubeconfigPath, "--restart-istiod", "never")
	if r.code != 3 || !strings.Contains(r.stderr, "--adopt") {
		t.Fatalf("install over a foreign Secret: %s", r)
	}
	got, err := secrets.Get(ctx, "cacerts", metav1.GetOptions{})
	if err != nil || string(got.Data["ca-cert.pem"]) != "by hand" || len(got.Data) != 1 {
		t.Fatalf("foreign Secret changed: %v %v", got.Data, err)
	}
	s.cli("cluster", "install", "east", "--kubeconfig", east.KubeconfigPath, "--restart-istiod", "never", "--adopt")
	mustCACerts(t, east)
}
