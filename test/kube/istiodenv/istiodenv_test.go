package istiodenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// TestSecretVolumeLayout checks the kubelet's layout: keys are links
// through ..data to a timestamped folder; an update is a new folder and a
// rename of ..data, the old folder and the links of removed keys go away,
// and unchanged data is not rewritten.
func TestSecretVolumeLayout(t *testing.T) {
	v := &SecretVolume{Dir: filepath.Join(t.TempDir(), "cacerts")}
	if err := v.Write(map[string][]byte{"a": []byte("1"), "b": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	first := mustLink(t, filepath.Join(v.Dir, "..data"))
	if !strings.HasPrefix(first, "..") || strings.Contains(first, "/") {
		t.Fatalf("..data -> %q, want a timestamped folder beside it", first)
	}
	for _, k := range []string{"a", "b"} {
		if got := mustLink(t, filepath.Join(v.Dir, k)); got != filepath.Join("..data", k) {
			t.Errorf("%s -> %q, want ..data/%s", k, got, k)
		}
	}
	if fi, err := os.Stat(filepath.Join(first, "a")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("a has mode %v, want 0600", fi.Mode().Perm())
	}
	if err := v.Write(map[string][]byte{"a": []byte("1"), "b": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if got := mustLink(t, filepath.Join(v.Dir, "..data")); got != first {
		t.Errorf("unchanged data was written again (..data -> %s, was %s)", got, first)
	}
	if err := v.Write(map[string][]byte{"a": []byte("3"), "c": []byte("4")}); err != nil {
		t.Fatal(err)
	}
	second := mustLink(t, filepath.Join(v.Dir, "..data"))
	if second == first {
		t.Fatal("..data was not swapped")
	}
	if _, err := os.Lstat(filepath.Join(v.Dir, first)); !os.IsNotExist(err) {
		t.Errorf("the previous folder %s is still there (%v)", first, err)
	}
	if _, err := os.Lstat(filepath.Join(v.Dir, "b")); !os.IsNotExist(err) {
		t.Errorf("the link of removed key b is still there (%v)", err)
	}
	for k, want := range map[string]string{"a": "3", "c": "4"} {
		if b, err := os.ReadFile(filepath.Join(v.Dir, k)); err != nil || string(b) != want {
			t.Errorf("%s reads %q, %v; want %q", k, b, err, want)
		}
	}

}

func mustLink(t *testing.T, p string) string {
	t.Helper()
	target, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// TestSyncerLagAndPause runs the syncer against a real kube-apiserver (no
// istiod): the volume follows the Secret, lags by the configured time,
// writes nothing while paused and catches up when resumed, and keeps the
// last content when the Secret is deleted.
func TestSyncerLagAndPause(t *testing.T) {
	c := kubeenv.Start(t, "sync")
	c.EnsureNamespace(t, Namespace)
	secrets := c.Client.CoreV1().Secrets(Namespace)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(val string) string {
		t.Helper()
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: Namespace}, Data: map[string][]byte{"k": []byte(val)}}
		got, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
		if err != nil {
			got, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
		return got.ResourceVersion
	}
	vol := &SecretVolume{Dir: filepath.Join(t.TempDir(), "cacerts")}
	s := newSyncer(c.Client, Namespace, SecretName, vol, 0)
	go s.run(ctx)
	wait := func(rv string, timeout time.Duration) time.Time {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, timeout)
		defer wcancel()
		if err := s.waitFor(wctx, rv); err != nil {
			t.Fatal(err)
		}
		_, at, _, _ := s.state()
		return at
	}
	content := func() string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(vol.Dir, "k"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	wait(put("v1"), 5*time.Second)
	if got := content(); got != "v1" {
		t.Fatalf("volume holds %q, want v1", got)
	}

	const lag = 2 * time.Second
	s.mu.Lock()
	s.lag = lag
	s.mu.Unlock()
	changed := time.Now()
	rv2 := put("v2")
	at := wait(rv2, lag+5*time.Second)
	if d := at.Sub(changed); d < lag {
		t.Errorf("with a lag of %s the volume followed the Secret after %s", lag, d)
	}
	if got := content(); got != "v2" {
		t.Fatalf("volume holds %q, want v2", got)
	}

	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
	rv3 := put("v3")
	time.Sleep(lag + time.Second)
	if rv, _, _, _ := s.state(); rv != rv2 || content() != "v2" {
		t.Fatalf("paused, the volume moved to version %s (%q)", rv, content())
	}
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
	wait(rv3, 5*time.Second)
	if got := content(); got != "v3" {
		t.Fatalf("resumed, the volume holds %q, want v3", got)
	}

	if err := secrets.Delete(ctx, SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if got := content(); got != "v3" {
		t.Errorf("after the Secret was deleted the volume holds %q, want the last content v3", got)
	}
}
