// End-to-end tests of `meshroot agent` against real kube-apiservers and a
// real `meshroot serve`, all as separate processes on 127.0.0.1. Helpers
// are in meshroot_test.go.

package kube

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// TestAgentBootstrapTwoClusters bootstraps two clusters with join tokens
// from one server: each gets its own intermediate under the same root, so
// a workload of one cluster verifies against the other's root-cert.pem. A
// join token works once.
func TestAgentBootstrapTwoClusters(t *testing.T) {
	east := kubeenv.Start(t, "east")
	west := kubeenv.Start(t, "west")
	s := startServer(t, "")
	for _, c := range []*kubeenv.Cluster{east, west} {
		c.EnsureNamespace(t, meshNS)
		s.cli("cluster", "add", c.Name)
	}
	eastToken, westToken := s.joinToken("east"), s.joinToken("west")

	// east gets its token as a flag, west in MESHROOT_JOIN_TOKEN (what the
	// agent's help recommends).
	s.mustAgentOnce(t, "east", east.KubeconfigPath, nil, "--join-token", eastToken)
	s.mustAgentOnce(t, "west", west.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + westToken})
	e, w := mustCACerts(t, east), mustCACerts(t, west)

	for name, cc := range map[string]*cacerts{"east": e, "west": w} {
		if cc.cert.Subject.CommonName != name {
			t.Errorf("%s's intermediate names %q", name, cc.cert.Subject.CommonName)
		}
		if len(cc.roots) != 1 || len(cc.chain) != 2 {
			t.Errorf("%s: %d roots and a chain of %d, want 1 root and intermediate+root", name, len(cc.roots), len(cc.chain))
		}
	}
	if e.serial == w.serial || publicKeyEqual(e.cert.PublicKey, w.key.Public()) {
		t.Errorf("east and west share an intermediate (serials %s, %s) or its key", e.serial, w.serial)
	}
	if !sameCerts(e.roots, w.roots) || !sameCerts(e.roots, s.bundle()) {
		t.Errorf("east and west do not have the server's one root in root-cert.pem")
	}
	if e.secret.Annotations[annRootID] != w.secret.Annotations[annRootID] {
		t.Errorf("root-id annotations differ: %s vs %s", e.secret.Annotations[annRootID], w.secret.Annotations[annRootID])
	}

	// One root of trust: a workload certificate signed by one cluster's
	// intermediate verifies against the other cluster's root-cert.pem, as
	// the peer's proxy would check it (the leaf arrives with its chain).
	for _, pair := range [][2]*cacerts{{e, w}, {w, e}} {
		signer, verifier := pair[0], pair[1]
		id := fmt.Sprintf("spiffe://%s/ns/app/sa/%s-client", trustDomain, signer.cert.Subject.CommonName)
		leaf := signWorkload(t, signer, id)
		inter := x509.NewCertPool()
		for _, c := range signer.chain[:len(signer.chain)-1] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: verifier.rootPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("a workload of %s does not verify against %s's root-cert.pem: %v", signer.cert.Subject.CommonName, verifier.cert.Subject.CommonName, err)
		}
	}

	list := s.intermediates("")
	for _, cc := range []*cacerts{e, w} {
		if r := list[cc.serial]; r.Status != "active" || r.Cluster != cc.cert.Subject.CommonName {
			t.Errorf("intermediate list has %+v for %s's serial %s, want it active for that cluster", r, cc.cert.Subject.CommonName, cc.serial)
		}
	}

	// The join token is spent: with east's Secret gone, the same token is
	// refused, and nothing is written.
	if err := east.Client.CoreV1().Secrets(meshNS).Delete(context.Background(), cacertsName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	seq := s.lastAuditSeq()
	r := s.agentOnce(t, "east", east.KubeconfigPath, nil, "--join-token", eastToken)
	if r.code == 0 || !strings.Contains(r.stderr, "join token was already used") {
		t.Errorf("a second agent run with a used join token: want a failure saying the token was already used; got %s", r)
	}
	if getSecret(t, east, meshNS, cacertsName) != nil {
		t.Errorf("the refused agent wrote cacerts")
	}
	s.wantDenied(t, seq, "east", "join token was already used")
	if strings.Contains(r.stderr, eastToken) || strings.Contains(s.cli("audit", "list", "-o", "json"), eastToken) {
		t.Errorf("the join token's secret appears in the agent's message or the audit log")
	}
}

// TestAgentServiceAccountToken authenticates agents with projected
// service-account tokens (audience meshroot) under each verification mode
// the server offers, registered as three clusters that all point at one
// apiserver "east", and checks the refusals: wrong audience, another service
// account, and a token from another cluster (west). Each refusal fails the
// agent with the reason and leaves a denied row in the audit log.
//
// Not tested here: an expired token. The apiserver refuses TokenRequests for
// less than 10 minutes, and meshroot allows 60 s of clock skew, so a real
// token cannot expire within this file's time budget without a forged token
// or a fake clock; the authn unit tests cover expiry.
func TestAgentServiceAccountToken(t *testing.T) {
	east := kubeenv.Start(t, "east")
	west := kubeenv.Start(t, "west")
	s := startServer(t, "")
	east.EnsureNamespace(t, meshNS)
	dir := t.TempDir()

	jwks := writeFile(t, dir, "east-jwks.json", east.JWKS(t))
	caFile := writeFile(t, dir, "east-ca.pem", east.CAPEM)
	s.cli("cluster", "add", "east-jwks", "--k8s-issuer", east.Issuer, "--k8s-jwks", jwks)
	s.cli("cluster", "add", "east-oidc", "--k8s-issuer", east.Issuer, "--k8s-oidc-discovery", "--k8s-ca", caFile)
	s.cli("cluster", "add", "east-tokenreview", "--k8s-tokenreview-kubeconfig", east.KubeconfigPath)

	token := func(c *kubeenv.Cluster, sa, aud string) string {
		return writeFile(t, dir, c.Name+"-"+sa+"-"+aud+".jwt", []byte(c.ServiceAccountToken(t, meshNS, sa, aud, time.Hour)))
	}
	good := token(east, agentSA, "meshroot")
	refusals := []struct {
		name, file string
		// want is the reason, per mode (one entry: the same in all modes).
		want map[string]string
	}{
		{"wrong-audience", token(east, agentSA, "istio-ca"), map[string]string{
			"jwks": `wrong audience ["istio-ca"]`, "oidc": `wrong audience ["istio-ca"]`,
			"tokenreview": "was not authenticated by cluster east-tokenreview's TokenReview",
		}},
		{"other-service-account", token(east, "intruder", "meshroot"), map[string]string{
			"": "service account istio-system/intruder is not allowed for cluster",
		}},
		{"other-cluster", token(west, agentSA, "meshroot"), map[string]string{
			"jwks": "wrong issuer", "oidc": "wrong issuer",
			"tokenreview": "was not authenticated by cluster east-tokenreview's TokenReview",
		}},
	}

	for _, mode := range []string{"jwks", "oidc", "tokenreview"} {
		cluster := "east-" + mode
		t.Run(mode, func(t *testing.T) {
			for _, tc := range refusals {
				want, ok := tc.want[mode]
				if !ok {
					want = tc.want[""]
				}
				// A Secret name of its own: a valid cacerts would let the
				// agent succeed without asking the server.
				secret := "refused-" + tc.name
				seq := s.lastAuditSeq()
				r := s.agentOnce(t, cluster, east.KubeconfigPath, nil, "--token-file", tc.file, "--secret", secret)
				if r.code == 0 || !strings.Contains(r.stderr, "server refused the service-account token") || !strings.Contains(r.stderr, want) {
					t.Errorf("%s: want a failure saying the server refused the token: %q; got %s", tc.name, want, r)
				}
				if getSecret(t, east, meshNS, secret) != nil {
					t.Errorf("%s: the refused agent wrote a Secret", tc.name)
				}
				s.wantDenied(t, seq, cluster, want)
			}

			seq := s.lastAuditSeq()
			s.mustAgentOnce(t, cluster, east.KubeconfigPath, nil, "--token-file", good, "--secret", "cacerts-"+mode)
			cc := mustCheck(t, getSecret(t, east, meshNS, "cacerts-"+mode))
			if cc.cert.Subject.CommonName != cluster {
				t.Errorf("intermediate names %q, want %s", cc.cert.Subject.CommonName, cluster)
			}
			rows := s.issued(cluster, seq)
			wantActor := fmt.Sprintf("cluster:%s/k8s-service-account:system:serviceaccount:%s:%s", cluster, meshNS, agentSA)
			if len(rows) != 1 || rows[0].Actor != wantActor || !strings.Contains(rows[0].Details, cc.serial) {
				t.Errorf("audit: want one issuance to %s for serial %s; got %+v", wantActor, cc.serial, rows)
			}
		})
	}
}

// TestAgentDaemonRenewsAtomically runs the agent as a daemon with a short
// intermediate lifetime and watches the Secret: it is renewed every few
// seconds, every version of it is whole and valid, old intermediates are
// superseded, and renewals authenticate with the current intermediate
// (mTLS) rather than the spent join token.
func TestAgentDaemonRenewsAtomically(t *testing.T) {
	// A 20 s watch of the Secret: beside the other waiting tests (after
	// the package's sequential ones), not in a row with them.
	t.Parallel()
	c := kubeenv.Start(t, "renew")
	s := startServer(t, "policy:\n  minTTL: 1m\n  defaultTTL: 2m\n  maxTTL: 1h\n")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "renew")
	seq := s.lastAuditSeq()

	// Watch the one Secret from before it exists, so that every version of
	// it is seen (a watch delivers each change in order).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := metav1.ListOptions{FieldSelector: "metadata.name=" + cacertsName}
	w, err := c.Client.CoreV1().Secrets(meshNS).Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Stop() }()

	// 2m at 0.05: a renewal about every 6 s.
	a := s.startAgent(t, "renew", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("renew")},
		"--ttl", "2m", "--renew-fraction", "0.05")

	const window = 20 * time.Second
	var serials []string // distinct, in the order written
	var versions int
	// The window runs from the first version, which must come within 30 s.
	started := false
	timeout := time.After(30 * time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
			a.alive(t)
		case ev, ok := <-w.ResultChan():
			if !ok { // the apiserver may end a watch: resume after the last version seen
				if w, err = c.Client.CoreV1().Secrets(meshNS).Watch(ctx, opts); err != nil {
					t.Fatal(err)
				}
				continue
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
			default:
				t.Fatalf("watch event %s: %v", ev.Type, ev.Object)
			}
			sec := ev.Object.(*corev1.Secret)
			opts.ResourceVersion = sec.ResourceVersion
			versions++
			cc, err := checkCACerts(sec, time.Now())
			if err != nil {
				t.Errorf("version %d of cacerts (resourceVersion %s, %s) is not whole and valid: %v", versions, sec.ResourceVersion, ev.Type, err)
				continue
			}
			if len(serials) == 0 || serials[len(serials)-1] != cc.serial {
				if slices.Contains(serials, cc.serial) {
					t.Errorf("serial %s came back after being replaced", cc.serial)
				}
				serials = append(serials, cc.serial)
			}
			if !started {
				started = true
				timeout = time.After(window)
			}
		case <-timeout:
			if !started {
				a.alive(t)
				t.Fatal("the agent wrote no cacerts within 30 s")
			}
			done = true
		}
	}
	a.alive(t)
	if code := a.stop(t); code != 0 {
		t.Errorf("agent exited %d on SIGTERM, want 0", code)
	}
	t.Logf("%d versions of cacerts, %d intermediates in %s", versions, len(serials), window)

	// The first intermediate plus at least two renewals, but not a renewal
	// loop (the expected cadence is one per ~6 s, less jitter).
	if len(serials) < 3 {
		t.Errorf("%d intermediates in %s, want at least 3 (two renewals)", len(serials), window)
	}
	if len(serials) > 15 {
		t.Errorf("%d intermediates in %s: the agent renews far more often than every ~6 s", len(serials), window)
	}

	finalSecret := getSecret(t, c, meshNS, cacertsName)
	final := mustCheck(t, finalSecret)
	if !slices.Contains(serials, final.serial) { // renewed after the window
		serials = append(serials, final.serial)
	}
	// Two-minute intermediates sign CRLs that run to their own expiry, less
	// than an hour: those count as current, so ca-crl.pem is written.
	if crls := finalSecret.Data["ca-crl.pem"]; !bytes.Contains(crls, []byte("BEGIN X509 CRL")) {
		t.Errorf("the final cacerts has no ca-crl.pem (keys %v): the short-lived intermediates' CRLs were not taken as current", keysOf(finalSecret.Data))
	}
	list := s.intermediates("renew")
	for _, serial := range serials {
		want := "superseded"
		if serial == final.serial {
			want = "active"
		}
		if got := list[serial].Status; got != want {
			t.Errorf("intermediate %s is %q, want %s", serial, got, want)
		}
	}
	// Every intermediate the server issued reached the Secret: a SIGTERM
	// between an issuance and its write waits for the write
	// (agent.ShutdownGrace).
	if len(list) != len(serials) {
		t.Errorf("the server issued %d intermediates, the Secret showed %d", len(list), len(serials))
	}

	rows := s.issued("renew", seq)
	if len(rows) < 3 {
		t.Fatalf("audit: %d issuances, want at least 3", len(rows))
	}
	if !strings.Contains(rows[0].Actor, "/join-token:") {
		t.Errorf("audit: the first issuance's actor is %q, want the join token", rows[0].Actor)
	}
	for _, r := range rows[1:] {
		if !strings.Contains(r.Actor, "/mtls:") {
			t.Errorf("audit row %d: a renewal by %q, want mTLS with the current intermediate", r.Seq, r.Actor)
		}
	}
}

// startFollower starts a server and an agent daemon for a new cluster and
// waits for its first cacerts.
func startFollower(t *testing.T, name string) (*kubeenv.Cluster, *server, *proc, *cacerts) {
	return startFollowerArgs(t, name)
}

// startFollowerArgs is startFollower with extra agent flags.
func startFollowerArgs(t *testing.T, name string, extra ...string) (*kubeenv.Cluster, *server, *proc, *cacerts) {
	c := kubeenv.Start(t, name)
	s := startServer(t, "")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", name)
	a := s.startAgent(t, name, c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken(name)}, extra...)
	var first *cacerts
	eventually(t, 30*time.Second, "first cacerts", func() error {
		a.alive(t)
		sec := getSecret(t, c, meshNS, cacertsName)
		if sec == nil {
			return fmt.Errorf("no Secret yet")
		}
		first = mustCheck(t, sec)
		return nil
	})
	// The server counts the agent's trust bundle watch.
	s.waitWatchers(t, 1, 15*time.Second)
	a.alive(t)
	if len(first.roots) != 1 || first.seq != 1 {
		t.Fatalf("first cacerts: %d roots, bundle sequence %d; want 1 and 1", len(first.roots), first.seq)
	}
	return c, s, a, first
}

// waitRoots waits until cacerts holds want roots at bundle sequence seq,
// and checks that the intermediate is still first's.
func waitRoots(t *testing.T, c *kubeenv.Cluster, s *server, a *proc, first *cacerts, timeout time.Duration) *cacerts {
	t.Helper()
	want := s.bundle()
	var cc *cacerts
	eventually(t, timeout, "cacerts holds the new trust bundle", func() error {
		a.alive(t)
		cc = mustCACerts(t, c)
		if !sameCerts(cc.roots, want) || cc.seq != 2 {
			return fmt.Errorf("root-cert.pem has %d roots at bundle sequence %d; want the server's %d at 2", len(cc.roots), cc.seq, len(want))
		}
		return nil
	})
	if cc.serial != first.serial || !cc.top().Equal(first.top()) {
		t.Errorf("the intermediate changed with the bundle: serial %s -> %s", first.serial, cc.serial)
	}
	return cc
}

// TestAgentFollowsBundle: after `root prepare` the running agent puts both
// roots into root-cert.pem and keeps its intermediate. Its writes after
// the first keep only the metadata the API server answers with
// (kubeclient's UpdateMeta) and start from it: a resourceVersion that
// was not the stored one would fail the next write with a conflict.
func TestAgentFollowsBundle(t *testing.T) {
	c, s, a, first := startFollower(t, "follow")
	mark := len(a.output())
	s.cli("root", "prepare")
	if len(s.bundle()) != 2 {
		t.Fatalf("the trust bundle has %d roots after root prepare, want 2", len(s.bundle()))
	}
	cc := waitRoots(t, c, s, a, first, 15*time.Second)
	if n := len(s.intermediates("follow")); n != 1 {
		t.Errorf("the server issued %d intermediates, want 1: a bundle change needs none", n)
	}
	// The intermediate still chains to the first root only.
	if !cc.top().Equal(first.roots[0]) {
		t.Errorf("cert-chain.pem ends with %s, want the first root", cc.top().Subject)
	}

	// root prepare's write was an update from the created Secret; the
	// rollback's is an update from that update's answer.
	s.cli("root", "rollback")
	eventually(t, 15*time.Second, "cacerts holds the first root alone again", func() error {
		a.alive(t)
		if cc := mustCACerts(t, c); !sameCerts(cc.roots, first.roots) || cc.seq != 3 {
			return fmt.Errorf("root-cert.pem has %d roots at bundle sequence %d; want the first root at 3", len(cc.roots), cc.seq)
		}
		return nil
	})
	out := a.output()[mark:]
	if n := strings.Count(out, "trust bundle changed; updating root-cert.pem"); n != 2 {
		t.Errorf("the agent logged %d bundle changes written, want 2:\n%s", n, out)
	}
	if strings.Contains(out, "changed since the agent last wrote or read it") || strings.Contains(out, "reconcile failed") {
		t.Errorf("a write from the answer of the one before conflicted or failed:\n%s", out)
	}
}

// TestAgentSurvivesServerRestart: the server goes away and comes back on
// the same address and data dir; meanwhile the Secret stays as it was, and
// afterwards the agent's bundle watch reconnects and follows a new root.
func TestAgentSurvivesServerRestart(t *testing.T) {
	c, s, a, first := startFollower(t, "restart")
	// The agent's steady state: once its own CRL has reached the server it
	// completes ca-crl.pem (a CA without a current CRL keeps it out), one
	// write after the first. Take the Secret from there.
	var settled *corev1.Secret
	eventually(t, 15*time.Second, "the agent writes ca-crl.pem once every CA has a CRL", func() error {
		if settled = getSecret(t, c, meshNS, cacertsName); settled == nil || len(settled.Data["ca-crl.pem"]) == 0 {
			return fmt.Errorf("no ca-crl.pem in cacerts yet")
		}
		return nil
	})
	mark := len(a.output())
	if code := s.stop(); code != 0 {
		t.Errorf("server exited %d on SIGTERM with an agent watching, want 0", code)
	}
	// The stream ends, then at least one reconnection fails while the
	// server is down.
	eventually(t, 15*time.Second, "agent notices the server is gone and retries", func() error {
		a.alive(t)
		if n := strings.Count(a.output()[mark:], "trust bundle watch interrupted"); n < 2 {
			return fmt.Errorf("agent logged \"trust bundle watch interrupted\" %d times, want 2", n)
		}
		return nil
	})
	if sec := getSecret(t, c, meshNS, cacertsName); sec == nil || sec.ResourceVersion != settled.ResourceVersion {
		t.Errorf("cacerts changed while the server was down")
	}

	s.start()
	s.waitReady()
	s.cli("root", "prepare")
	waitRoots(t, c, s, a, first, 20*time.Second)
	s.waitWatchers(t, 1, 5*time.Second) // by its watch, reconnected
}

// TestAgentSurvivesAPIServerRestart: a bundle change arrives while the
// cluster's apiserver is down; the agent logs the failure, keeps going,
// and writes the new roots once the apiserver is back.
func TestAgentSurvivesAPIServerRestart(t *testing.T) {
	c, s, a, first := startFollower(t, "apirestart")
	c.StopAPIServer(t)
	mark := len(a.output())
	s.cli("root", "prepare")
	eventually(t, 15*time.Second, "agent logs a failed reconcile", func() error {
		a.alive(t)
		if !strings.Contains(a.output()[mark:], "reconcile failed") {
			return fmt.Errorf("agent has not logged \"reconcile failed\" since the apiserver stopped")
		}
		return nil
	})
	a.alive(t)
	c.StartAPIServer(t)
	waitRoots(t, c, s, a, first, 30*time.Second)
}

// TestAgentBundleChangeOverForeignEdit: a reconcile that a bundle change
// wakes starts from the Secret as the agent last wrote it, without reading
// it (agent/knownsecret.go). Someone edits the Secret in between; the
// real apiserver refuses the agent's write (its resourceVersion is
// stale), and the agent reads the Secret and writes the change over it in
// the same reconcile: the new roots land, the edit stays, nothing fails.
func TestAgentBundleChangeOverForeignEdit(t *testing.T) {
	c, s, a, first := startFollower(t, "foreignedit")
	ctx := context.Background()
	var settled *corev1.Secret
	eventually(t, 15*time.Second, "the agent writes ca-crl.pem once every CA has a CRL", func() error {
		if settled = getSecret(t, c, meshNS, cacertsName); settled == nil || len(settled.Data["ca-crl.pem"]) == 0 {
			return fmt.Errorf("no ca-crl.pem in cacerts yet")
		}
		return nil
	})
	// istiod's part, played by the test: publish the Secret's roots, so
	// that the agent confirms istiod and makes no timed recheck (which
	// reads the Secret) while the test edits it.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio-ca-root-cert", Namespace: meshNS},
		Data: map[string]string{"root-cert.pem": string(settled.Data["root-cert.pem"])}}
	if _, err := c.Client.CoreV1().ConfigMaps(meshNS).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIstiodLoaded(t, s, c, 1, 20*time.Second)

	sec := getSecret(t, c, meshNS, cacertsName)
	sec.Annotations["example.org/owner"] = "ops"
	if _, err := c.Client.CoreV1().Secrets(meshNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	mark := len(a.output())
	s.cli("root", "prepare")
	waitRoots(t, c, s, a, first, 15*time.Second)
	if got := getSecret(t, c, meshNS, cacertsName).Annotations["example.org/owner"]; got != "ops" {
		t.Errorf("the agent's write dropped the edit made since its last one: annotation %q, want ops", got)
	}
	out := a.output()[mark:]
	if !strings.Contains(out, "changed since the agent last wrote or read it") {
		t.Errorf("the agent did not log the conflict it recovered from:\n%s", out)
	}
	if strings.Contains(out, "reconcile failed") {
		t.Errorf("the conflict failed the reconcile instead of a read and a write in the same one:\n%s", out)
	}
}

// TestIstiodRestart checks --restart-istiod: auto rolls istiod (stamps its
// pod template) when cacerts is created and when the root set changes under
// an istiod without ISTIO_MULTIROOT_MESH, but not when an istiod with it
// gets a superset of its roots; never leaves it alone.
func TestIstiodRestart(t *testing.T) {
	t.Parallel() // test/kube/run.sh: the istiod tests three at a time
	c := kubeenv.Start(t, "istiod")
	s := startServer(t, "")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "mesh")
	ctx := context.Background()
	deps := c.Client.AppsV1().Deployments(meshNS)
	labels := map[string]string{"app": "istiod"}
	// No controller-manager runs, so no pod ever starts: only the object matters.
	_, err := deps.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: meshNS},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery", Image: "docker.io/istio/pilot:1.28.0"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// edit changes istiod: multiroot sets ISTIO_MULTIROOT_MESH, and the
	// restartedAt annotation is cleared.
	edit := func(multiroot bool) {
		t.Helper()
		d, err := deps.Get(ctx, "istiod", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		delete(d.Spec.Template.Annotations, annRestartedAt)
		d.Spec.Template.Spec.Containers[0].Env = nil
		if multiroot {
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "ISTIO_MULTIROOT_MESH", Value: "true"}}
		}
		if _, err := deps.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	restartedAt := func() string {
		t.Helper()
		d, err := deps.Get(ctx, "istiod", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Annotations[annRestartedAt]
	}
	once := func(mode string) {
		t.Helper()
		s.mustAgentOnce(t, "mesh", c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("mesh")}, "--restart-istiod", mode)
	}
	// rewind makes cacerts look like a cluster that has not caught up with
	// the bundle: only the first root, at sequence 1.
	rewind := func(first *x509.Certificate) {
		t.Helper()
		sec := getSecret(t, c, meshNS, cacertsName)
		sec.Data["root-cert.pem"] = pemCerts(first)
		sec.Annotations[annBundleSeq] = "1"
		if _, err := c.Client.CoreV1().Secrets(meshNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// auto, cacerts created: istiod must restart to load plugged-in certs.
	before := time.Now().Add(-time.Second).UTC().Truncate(time.Second)
	once("auto")
	first := mustCACerts(t, c)
	if at, err := time.Parse(time.RFC3339, restartedAt()); err != nil || at.Before(before) {
		t.Fatalf("after creating cacerts with --restart-istiod auto: restartedAt = %q, want a time after %s (%v)", restartedAt(), before.Format(time.RFC3339), err)
	}

	// auto, ISTIO_MULTIROOT_MESH=true, roots become a superset: no restart.
	edit(true)
	s.cli("root", "prepare")
	once("auto")
	cc := mustCACerts(t, c)
	if len(cc.roots) != 2 || cc.seq != 2 {
		t.Fatalf("agent --once after root prepare: %d roots at bundle sequence %d, want 2 at 2 (--once must apply the current trust bundle)", len(cc.roots), cc.seq)
	}
	if got := restartedAt(); got != "" {
		t.Errorf("istiod with ISTIO_MULTIROOT_MESH=true was restarted (%s) for a superset of its roots", got)
	}

	// never, root set changes under an istiod without ISTIO_MULTIROOT_MESH:
	// auto would restart it (checked next), never does not.
	edit(false)
	rewind(first.roots[0])
	once("never")
	if cc := mustCACerts(t, c); len(cc.roots) != 2 {
		t.Fatalf("agent --once did not bring back the second root")
	}
	if got := restartedAt(); got != "" {
		t.Errorf("--restart-istiod never restarted istiod (%s) on a root change", got)
	}
	rewind(first.roots[0])
	once("auto")
	if got := restartedAt(); got == "" {
		t.Errorf("--restart-istiod auto did not restart istiod without ISTIO_MULTIROOT_MESH on a root change")
	}

	// never, cacerts created: no restart either.
	edit(false)
	if err := c.Client.CoreV1().Secrets(meshNS).Delete(ctx, cacertsName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	once("never")
	mustCACerts(t, c)
	if got := restartedAt(); got != "" {
		t.Errorf("--restart-istiod never restarted istiod (%s) on creating cacerts", got)
	}
}

// TestAgentRefusesForeignSecret: a cacerts Secret that meshroot did not
// write is left alone unless the agent runs with --adopt.
func TestAgentRefusesForeignSecret(t *testing.T) {
	c := kubeenv.Start(t, "foreign")
	s := startServer(t, "")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "foreign")
	ctx := context.Background()
	foreign, err := c.Client.CoreV1().Secrets(meshNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: cacertsName, Namespace: meshNS, Labels: map[string]string{"owner": "someone-else"}},
		Data:       map[string][]byte{"ca-cert.pem": []byte("not ours")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("foreign")}

	r := s.agentOnce(t, "foreign", c.KubeconfigPath, env)
	if r.code == 0 || !strings.Contains(r.stderr, "--adopt") || !strings.Contains(r.stderr, "not managed by meshroot") {
		t.Errorf("agent --once over a foreign cacerts: want a failure that mentions --adopt; got %s", r)
	}
	after := getSecret(t, c, meshNS, cacertsName)
	if after.ResourceVersion != foreign.ResourceVersion || !maps.EqualFunc(after.Data, foreign.Data, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("the foreign Secret was changed")
	}
	if n := len(s.intermediates("foreign")); n != 0 {
		t.Errorf("the refused agent got %d intermediates issued", n)
	}

	// --adopt replaces it; the join token was not spent by the refusal.
	s.mustAgentOnce(t, "foreign", c.KubeconfigPath, env, "--adopt")
	cc := mustCACerts(t, c)
	if cc.secret.UID != foreign.UID {
		t.Errorf("--adopt recreated the Secret instead of updating it")
	}
	// Exactly the agent's keys: cacerts, and ca-crl.pem when the fleet's
	// CRL set was complete at the write (agent/crl_plan.go); none of the
	// foreign Secret's own.
	allowed := map[string]bool{"ca-crl.pem": true}
	for _, k := range cacertsKeys {
		allowed[k] = true
	}
	extra := false
	for k := range cc.secret.Data {
		extra = extra || !allowed[k]
	}
	if extra || len(cc.secret.Data) < len(cacertsKeys) {
		t.Errorf("adopted Secret has keys %v, want exactly %v (and ca-crl.pem)", keysOf(cc.secret.Data), cacertsKeys)
	}
}
