// The closed loop with real istiods: the agent confirms what istiod serves
// (istio-ca-root-cert against the Secret), reports it, and the rotation
// gates wait for it; a missed kubelet update is reported stale, blocks
// activate naming the cluster, and --restart-istiod auto recovers it.

package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/istiodenv"
	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// istiodStaleAfter is the agents' --istiod-stale-after in these tests.
const istiodStaleAfter = 5 * time.Second

// istiodView is one cluster in `root status -o json`, with istiod.
type istiodView struct {
	Cluster        string   `json:"cluster"`
	BundleSequence uint64   `json:"bundle_sequence_applied"`
	Serial         string   `json:"intermediate_serial"`
	Gate           string   `json:"gate"`
	Blockers       []string `json:"blockers"`
	Istiod         struct {
		State          string    `json:"state"`
		BundleSequence uint64    `json:"bundle_sequence"`
		Serial         string    `json:"serial"`
		Roots          []string  `json:"roots"`
		Probed         bool      `json:"probed"`
		Since          time.Time `json:"since"`
		StaleSince     time.Time `json:"stale_since"`
		Detail         string    `json:"detail"`
	} `json:"istiod"`
}

func istiodStatus(t testing.TB, s *server, cluster string) istiodView {
	t.Helper()
	out := s.cli("root", "status", "-o", "json")
	var st struct {
		Clusters []istiodView `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("root status -o json: %v\n%s", err, out)
	}
	for _, c := range st.Clusters {
		if c.Cluster == cluster {
			return c
		}
	}
	t.Fatalf("root status has no cluster %s:\n%s", cluster, out)
	return istiodView{}
}

// waitIstiodLoaded waits until the server records cluster's istiod as
// serving bundle seq and the Secret's intermediate, and returns the view.
func waitIstiodLoaded(t testing.TB, s *server, c *kubeenv.Cluster, seq uint64, timeout time.Duration) istiodView {
	t.Helper()
	var v istiodView
	eventually(t, timeout, c.Name+"'s istiod confirmed at bundle "+fmt.Sprint(seq), func() error {
		v = istiodStatus(t, s, c.Name)
		cc := mustCACerts(t, c)
		if v.Istiod.State != "loaded" || v.Istiod.BundleSequence < seq || v.Istiod.Serial != cc.serial {
			return fmt.Errorf("istiod %+v (Secret: bundle %d, serial %s)", v.Istiod, v.BundleSequence, cc.serial)
		}
		return nil
	})
	return v
}

// createIstiodDeployment creates istio-system/istiod with
// ISTIO_MULTIROOT_MESH=true: no controller-manager runs, so no pod starts;
// the object is what the agent patches to roll istiod, and the test
// carries the rollout out on the istiodenv process.
func createIstiodDeployment(t *testing.T, c *kubeenv.Cluster) {
	t.Helper()
	labels := map[string]string{"app": "istiod"}
	_, err := c.Client.AppsV1().Deployments(meshNS).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: meshNS},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery", Image: "docker.io/istio/pilot:1.28.0",
					Env: []corev1.EnvVar{{Name: "ISTIO_MULTIROOT_MESH", Value: "true"}}}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func restartedAt(t testing.TB, c *kubeenv.Cluster) string {
	t.Helper()
	d, err := c.Client.AppsV1().Deployments(meshNS).Get(context.Background(), "istiod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Annotations[annRestartedAt]
}

// rollout is what a Deployment rollout does to istiod: the old pod stops,
// a new one mounts the Secret as it is now (a fresh volume), and starts.
func rollout(t *testing.T, d *istiodenv.Istiod) {
	t.Helper()
	d.Stop(t)
	sec := getSecret(t, d.Cluster, meshNS, cacertsName)
	if err := d.Volume.Write(sec.Data); err != nil {
		t.Fatal(err)
	}
	d.Restart(t)
}

func agentMetric(t testing.TB, addr, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestIstiodConfirmStaleRestart (issue 11 items 3 and 6b): an agent daemon
// with a real istiod reports it loaded (serial and roots of the Secret);
// then the kubelet misses the Secret's update (the folder's sync paused)
// across `root prepare`: the agent reports istiod stale after
// --istiod-stale-after, shows it in meshroot_agent_istiod_state, `root
// activate` refuses naming the cluster, and with --restart-istiod auto the
// agent rolls istiod's Deployment once; the rollout (a new istiod on a
// fresh volume) serves the new roots, the agent reports loaded, and
// activate passes.
func TestIstiodConfirmStaleRestart(t *testing.T) {
	t.Parallel() // test/kube/run.sh: the istiod tests three at a time
	istiodenv.Binary(t)
	s := startServer(t, rotationConfig)
	c := kubeenv.Start(t, "east")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "east")
	s.mustAgentOnce(t, "east", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("east")}, "--restart-istiod", "never")
	d := istiodenv.Start(t, c, istiodenv.WithTrustDomain(trustDomain), istiodenv.WithMultiRoot())
	createIstiodDeployment(t, c)
	metricsAddr := "127.0.0.1:" + freePorts(t, 1)[0]
	s.startAgent(t, "east", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("east")},
		"--restart-istiod", "auto", "--istiod-stale-after", istiodStaleAfter.String(), "--metrics-addr", metricsAddr)

	// Item 3: loaded, with the Secret's serial and roots.
	v := waitIstiodLoaded(t, s, c, 1, 30*time.Second)
	cc := mustCACerts(t, c)
	if !sameIDs(v.Istiod.Roots, certIDs(cc.roots)...) || v.Gate != "istiod" || v.Istiod.Since.IsZero() {
		t.Fatalf("east after bootstrap: %+v, want loaded with roots %v and gate istiod", v, certIDs(cc.roots))
	}
	if m := agentMetric(t, metricsAddr, "meshroot_agent_istiod_state"); !strings.Contains(m, `state="loaded"} 1`) {
		t.Errorf("agent metrics while loaded:\n%s", m)
	}

	// Item 6b: the kubelet misses the update.
	d.PauseSync()
	prepared := time.Now()
	s.cli("root", "prepare")
	eventually(t, 30*time.Second, "east's istiod reported stale", func() error {
		if v = istiodStatus(t, s, "east"); v.Istiod.State != "stale" {
			return fmt.Errorf("istiod %+v, Secret at bundle %d", v.Istiod, v.BundleSequence)
		}
		return nil
	})
	staleAfter := time.Since(prepared)
	if v.BundleSequence != 2 || v.Istiod.BundleSequence != 1 || v.Istiod.StaleSince.IsZero() || !strings.Contains(v.Istiod.Detail, "istiod publishes roots") {
		t.Errorf("stale report: %+v, want the Secret at bundle 2, istiod serving bundle 1 and what it publishes", v)
	}
	if staleAfter < istiodStaleAfter {
		t.Errorf("reported stale %s after prepare, before --istiod-stale-after %s", staleAfter, istiodStaleAfter)
	}
	if m := agentMetric(t, metricsAddr, "meshroot_agent_istiod_state"); !strings.Contains(m, `state="stale"} 1`) {
		t.Errorf("agent metrics while stale:\n%s", m)
	}
	r := s.cliResult("root", "activate")
	if r.code != 3 || !strings.Contains(r.stderr, "east: istiod stale since") {
		t.Fatalf("root activate with east's istiod stale: %s, want refused naming east", r)
	}
	t.Logf("root activate refused: %s", strings.TrimSpace(r.stderr))

	// The agent rolled istiod's Deployment (once); the test plays the
	// rollout on the real istiod process.
	var stamp string
	eventually(t, 20*time.Second, "the agent to roll istiod", func() error {
		if stamp = restartedAt(t, c); stamp == "" {
			return fmt.Errorf("no %s annotation on istiod's pod template", annRestartedAt)
		}
		return nil
	})
	rollout(t, d)
	waitIstiodLoaded(t, s, c, 2, 30*time.Second)
	d.ResumeSync()
	if got := restartedAt(t, c); got != stamp {
		t.Errorf("istiod rolled again (%s, first %s): the agent rolls once per Secret content", got, stamp)
	}
	if out := s.cli("root", "activate"); !strings.Contains(out, "active") {
		t.Errorf("root activate after the rollout: %s", out)
	}
}
