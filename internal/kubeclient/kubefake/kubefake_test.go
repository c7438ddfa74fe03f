package kubefake_test

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
)

// An update with the version read succeeds once; a second writer holding
// the same read gets a conflict, as from the API server. stringData is
// folded into data, and OnSecretWrite sees each stored write.
func TestSecretsOptimisticConcurrency(t *testing.T) {
	ctx := context.Background()
	k := kubefake.New("")
	var seen []string
	var stored []*kubeclient.Secret
	k.OnSecretWrite = func(_ context.Context, ns string, s *kubeclient.Secret) {
		seen = append(seen, ns+"/"+string(s.Data["k"]))
		stored = append(stored, s)
	}
	sec := k.Secrets("ns")
	if _, err := sec.Create(ctx, &kubeclient.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"k": "1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := sec.Create(ctx, &kubeclient.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}}, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v, want AlreadyExists", err)
	}
	a, _ := sec.Get(ctx, "s", metav1.GetOptions{})
	b, _ := sec.Get(ctx, "s", metav1.GetOptions{})
	a.Data["k"] = []byte("2")
	if _, err := sec.Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.Data["k"] = []byte("3")
	if _, err := sec.Update(ctx, b, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("update from a stale read: %v, want Conflict", err)
	}
	if got, _ := sec.Get(ctx, "s", metav1.GetOptions{}); string(got.Data["k"]) != "2" {
		t.Errorf("stored %q, want 2", got.Data["k"])
	}
	if len(seen) != 2 || seen[0] != "ns/1" || seen[1] != "ns/2" {
		t.Errorf("OnSecretWrite saw %v, want [ns/1 ns/2]", seen)
	}
	// What the hook was given stays as it was written: the later write
	// stored a new Secret, and callers only ever get copies.
	if got := string(stored[0].Data["k"]); got != "1" {
		t.Errorf("the first write's Secret now holds %q, want 1", got)
	}
	a.Data["k"] = []byte("changed by the caller")
	if got := string(stored[1].Data["k"]); got != "2" {
		t.Errorf("the stored Secret changed with the caller's copy: %q", got)
	}
	if n := k.SecretGets(); n != 3 {
		t.Errorf("SecretGets = %d, want 3", n)
	}
	if n := k.SecretWrites(); n != 2 {
		t.Errorf("SecretWrites = %d, want 2 (the refused create and update not counted)", n)
	}
	if _, err := k.ServiceAccounts("ns").CreateToken(ctx, "sa", nil, metav1.CreateOptions{}); err == nil {
		t.Error("a token without one configured")
	}
}

// By default a write stores copies of the data's bytes; with ShareData
// it keeps the writer's slices, and copies the rest: the data map, the
// metadata, and every read.
func TestSecretsShareData(t *testing.T) {
	for _, share := range []bool{false, true} {
		ctx := context.Background()
		k := kubefake.New("")
		k.ShareData = share
		var stored *kubeclient.Secret
		k.OnSecretWrite = func(_ context.Context, _ string, s *kubeclient.Secret) { stored = s }
		v := &kubeclient.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Annotations: map[string]string{"a": "1"}}, Data: map[string][]byte{"k": []byte("abc")}}
		if _, err := k.Secrets("ns").Create(ctx, v, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		v.Data["k"][0] = 'x' // in place: what ShareData's writer promises not to do
		v.Data["other"] = []byte("new key")
		v.Annotations["a"] = "2"
		want := "abc"
		if share {
			want = "xbc"
		}
		if got := string(stored.Data["k"]); got != want {
			t.Errorf("ShareData=%v: stored %q after the writer changed its slice, want %q", share, got, want)
		}
		if _, ok := stored.Data["other"]; ok {
			t.Errorf("ShareData=%v: a key the writer added after the write is stored", share)
		}
		if got := stored.Annotations["a"]; got != "1" {
			t.Errorf("ShareData=%v: stored annotation %q after the writer changed its own, want 1", share, got)
		}
		got, _ := k.Secrets("ns").Get(ctx, "s", metav1.GetOptions{})
		got.Data["k"][1] = 'y'
		if string(stored.Data["k"]) != want {
			t.Errorf("ShareData=%v: a change to what Get returned reached the stored Secret: %q", share, stored.Data["k"])
		}
	}
}

// PutConfigMap creates the ConfigMap, then replaces its data.
func TestPutConfigMap(t *testing.T) {
	ctx := context.Background()
	k := kubefake.New("")
	for _, v := range []string{"1", "2"} {
		if err := k.PutConfigMap(ctx, "ns", "cm", map[string]string{"k": v}); err != nil {
			t.Fatal(err)
		}
		cm, err := k.ConfigMaps("ns").Get(ctx, "cm", metav1.GetOptions{})
		if err != nil || cm.Data["k"] != v || cm.Namespace != "ns" {
			t.Fatalf("after putting %s: %+v, %v", v, cm, err)
		}
	}
}
