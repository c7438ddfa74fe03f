package kubeenv_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// TestReusedClusterIsReset: under Main, the next test's cluster is the
// earlier test's processes (same issuer) with none of its changes: what
// it created is gone, what it changed or deleted is back, and its tokens
// are refused.
func TestReusedClusterIsReset(t *testing.T) {
	const ns, sa, crbName = "reuse", "agent", "reuse-test-binding"
	ctx := context.Background()
	var issuer, tok string
	var defaultUID types.UID
	t.Run("first test", func(t *testing.T) {
		c := kubeenv.Start(t, "first")
		issuer = c.Issuer
		tok = c.ServiceAccountToken(t, ns, sa, "meshroot", time.Hour)
		if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: ns},
			Data:       map[string][]byte{"k": []byte("v")},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		crbs := c.Client.RbacV1().ClusterRoleBindings()
		if _, err := crbs.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: crbName},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := crbs.Delete(ctx, kubeenv.DiscoveryBindingName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		def, err := c.Client.CoreV1().Namespaces().Patch(ctx, "default", types.MergePatchType, []byte(`{"metadata":{"labels":{"reuse":"changed"}}}`), metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defaultUID = def.UID
		if r := review(t, c.Client, tok, "meshroot"); !r.Authenticated {
			t.Fatalf("the first test's token: %s", r.Error)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("next test", func(t *testing.T) {
		c := kubeenv.Start(t, "next")
		if c.Issuer != issuer {
			t.Fatalf("issuer %s, want the first test's %s: the cluster was not reused", c.Issuer, issuer)
		}
		if _, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the first test's namespace: %v, want NotFound", err)
		}
		if _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, "cacerts", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the first test's Secret: %v, want NotFound", err)
		}
		if _, err := c.Client.RbacV1().ClusterRoleBindings().Get(ctx, crbName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the first test's ClusterRoleBinding: %v, want NotFound", err)
		}
		def, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := def.Labels["reuse"]; ok || def.UID != defaultUID {
			t.Errorf("namespace default: labels %v, uid %s (was %s): want the first state back", def.Labels, def.UID, defaultUID)
		}
		// The deleted discovery binding is back: anonymous discovery works.
		if code := waitAnonStatus(t, c, http.StatusOK); code != http.StatusOK {
			t.Errorf("anonymous discovery after the reset: %d, want 200", code)
		}
		// The first test's token names a ServiceAccount that is gone, and
		// one made anew under the same name has a new UID: refused, once
		// the apiserver's cache of token reviews (10 s) has let go of it.
		fresh := c.ServiceAccountToken(t, ns, sa, "meshroot", time.Hour)
		if r := review(t, c.Client, fresh, "meshroot"); !r.Authenticated {
			t.Errorf("a new token after the reset: %s", r.Error)
		}
		start := time.Now()
		for {
			r := review(t, c.Client, tok, "meshroot")
			if !r.Authenticated {
				t.Logf("the first test's token refused %s after the reset", time.Since(start).Round(100*time.Millisecond))
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("the first test's token still authenticates as %q 30 s after the reset", r.User.Username)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})

	// A cluster whose apiserver was restarted during its test is not
	// reused.
	var restarted string
	t.Run("test that restarts its apiserver", func(t *testing.T) {
		c := kubeenv.Start(t, "restarted")
		restarted = c.Issuer
		c.StopAPIServer(t)
		c.StartAPIServer(t)
	})
	t.Run("test after it", func(t *testing.T) {
		c := kubeenv.Start(t, "after")
		if c.Issuer == restarted {
			t.Errorf("got the restarted cluster (%s) again", restarted)
		}
		if _, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("the cluster after it: %v", err)
		}
	})
}

// TestOrphanedClusterIsReaped: a test binary killed while its cluster runs
// (a go test timeout) leaves no apiserver or etcd behind.
func TestOrphanedClusterIsReaped(t *testing.T) {
	if out := os.Getenv("KUBEENV_ORPHAN_OUT"); out != "" {
		c := kubeenv.Start(t, os.Getenv("KUBEENV_ORPHAN_NAME"))
		if err := os.WriteFile(out, []byte(c.Issuer), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	out := filepath.Join(t.TempDir(), "issuer")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestOrphanedClusterIsReaped$")
	name := fmt.Sprintf("orphan%d", os.Getpid())
	cmd.Env = append(os.Environ(), "KUBEENV_ORPHAN_OUT="+out, "KUBEENV_ORPHAN_NAME="+name)
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("the child was not killed: %s", b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the child did not start its cluster: %v", err)
	}
	u, err := url.Parse(strings.TrimSuffix(string(data), "/"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("the orphaned apiserver still listens on %s 20 s after its test binary died", u.Host)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		left, _ := filepath.Glob(filepath.Join(os.TempDir(), "kubeenv-"+name+"-*"))
		if len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "kubeenv-"+name+"-*"))
	t.Errorf("the orphaned cluster's folders are still there: %v", left)
}
