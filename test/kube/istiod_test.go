// Real istiods (test/kube/istiodenv) in front of the cacerts Secrets that
// meshroot's agent writes: workloads get certificates from their cluster's
// istiod as istio-agent does and complete mutual TLS 1.3 across clusters;
// istiod follows a new intermediate swapped into its kubelet-style
// ./etc/cacerts, and keeps serving the old one while that folder is not
// synced.

package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/test/kube/istiodenv"
	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// istiodConfig gives intermediates of 10 minutes, so that an agent run
// with --renew-fraction 0.003 renews one about 2 s after it was issued.
const istiodConfig = `policy:
  minTTL: 1m
  defaultTTL: 10m
  maxTTL: 1h
`

const (
	// istiodReloadBound bounds how long istiod may take to sign with an
	// intermediate after its folder was swapped (measured: ~75 ms idle).
	istiodReloadBound = 20 * time.Second
	// pausedWatch is how long istiod is watched serving the old
	// intermediate while its folder is not synced: far longer than a reload.
	pausedWatch = 4 * time.Second
)

// istiodCluster is a cluster bootstrapped by meshroot's agent with a real
// istiod in front of its cacerts Secret and one workload.
type istiodCluster struct {
	c        *kubeenv.Cluster
	istiod   *istiodenv.Istiod
	workload *istiodenv.Workload
}

// TestIstiodWorkloadMutualTLS runs east and west, each bootstrapped by
// `meshroot agent --once` from one server and each with its own istiod
// loading the agent's cacerts through a kubelet-style folder, then checks
// that: istiod publishes the plugged root in istio-ca-root-cert; workloads
// get certificates for their SPIFFE IDs signed by their cluster's meshroot
// intermediate; east and west complete mutual TLS 1.3 both ways trusting
// only istio-ca-root-cert; a renewed intermediate under the same root,
// swapped in by renaming ..data, is what istiod signs with within a bound;
// and with the folder's sync paused istiod keeps signing with the old one.
func TestIstiodWorkloadMutualTLS(t *testing.T) {
	t.Parallel()        // test/kube/run.sh: the istiod tests three at a time
	istiodenv.Binary(t) // skips before anything starts when it is absent and MESHROOT_SKIP_ISTIOD=1
	start := time.Now()
	s := startServer(t, istiodConfig)
	clusters := map[string]*istiodCluster{}
	for _, name := range []string{"east", "west"} {
		c := kubeenv.Start(t, name)
		c.EnsureNamespace(t, meshNS)
		s.cli("cluster", "add", name)
		s.mustAgentOnce(t, name, c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken(name)}, "--restart-istiod", "never")
		d := istiodenv.Start(t, c, istiodenv.WithTrustDomain(trustDomain))
		clusters[name] = &istiodCluster{c: c, istiod: d, workload: d.Workload(t, name, "app")}
	}
	east, west := clusters["east"], clusters["west"]
	t.Logf("two clusters bootstrapped with istiods in %s", time.Since(start).Round(100*time.Millisecond))
	ctx := context.Background()

	ids := map[string]*identity{}
	for name, ic := range clusters {
		cc := mustCACerts(t, ic.c)
		roots := ic.workload.WaitRoots(t, 30*time.Second)
		if !sameCerts(roots, cc.roots) {
			t.Fatalf("%s: istio-ca-root-cert holds %s, want the plugged root-cert.pem %s", name, describeCerts(roots), describeCerts(cc.roots))
		}
		cert, err := ic.workload.Certificate(ctx, 10*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v\nistiod log:\n%s", name, err, ic.istiod.LogTail(30))
		}
		if got := cert.Leaf().URIs; len(got) != 1 || got[0].String() != ic.workload.SPIFFEID() {
			t.Errorf("%s: leaf names %v, want %s", name, got, ic.workload.SPIFFEID())
		}
		if got := fmt.Sprintf("%x", cert.Intermediate().SerialNumber); got != cc.serial {
			t.Errorf("%s: leaf signed by intermediate %s, want meshroot's %s from cacerts", name, got, cc.serial)
		}
		if !sameCerts(cert.Roots, cc.roots) {
			t.Errorf("%s: istiod returned roots %s, want %s", name, describeCerts(cert.Roots), describeCerts(cc.roots))
		}
		ids[name] = newIdentity(cert, roots)
	}

	t.Run("mutual TLS east<->west", func(t *testing.T) {
		for _, dir := range [][2]string{{"east", "west"}, {"west", "east"}} {
			cl, sv := clusters[dir[0]].workload, clusters[dir[1]].workload
			cerr, serr := handshakeOnce(ids[dir[0]], cl.SPIFFEID(), ids[dir[1]], sv.SPIFFEID())
			if cerr != nil || serr != nil {
				t.Errorf("%s -> %s: client: %v; server: %v", dir[0], dir[1], cerr, serr)
			}
		}
		// The checks can fail: a peer expected under another identity is
		// refused by the server side.
		_, serr := handshakeOnce(ids["east"], "spiffe://"+trustDomain+"/ns/other/sa/app", ids["west"], west.workload.SPIFFEID())
		if serr == nil || !strings.Contains(serr.Error(), "want spiffe://"+trustDomain+"/ns/other/sa/app") {
			t.Errorf("west accepted east as another identity: server error %v", serr)
		}
	})

	t.Run("token audience", func(t *testing.T) {
		// istiod's CA takes only tokens for audience istio-ca.
		tok := east.c.ServiceAccountToken(t, "east", "app", "meshroot", time.Hour)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := istiodenv.NewCSR(key, east.workload.SPIFFEID())
		if err != nil {
			t.Fatal(err)
		}
		_, err = east.istiod.CreateCertificate(ctx, poolOf(ids["east"].roots), tok, csr, time.Hour)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("CreateCertificate with a token for audience meshroot: %v, want Unauthenticated", err)
		}
	})

	t.Run("new intermediate reloaded", func(t *testing.T) {
		old := mustCACerts(t, east.c)
		renewed := renewIntermediate(t, s, east.c, old.serial)
		volAt := waitVolume(t, east.istiod, renewed)
		took := waitIstiodSerial(t, east, renewed.serial, istiodReloadBound)
		t.Logf("east istiod signed with the new intermediate %s, %s after its folder was swapped", renewed.serial, took.Sub(volAt).Round(time.Millisecond))
		if !sameCerts(renewed.roots, old.roots) {
			t.Fatalf("the renewed intermediate came with other roots")
		}
		// The new chain works across clusters, east as client and server.
		cert, err := east.workload.Certificate(ctx, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ids["east"] = newIdentity(cert, ids["east"].roots)
		for _, dir := range [][2]string{{"east", "west"}, {"west", "east"}} {
			cerr, serr := handshakeOnce(ids[dir[0]], clusters[dir[0]].workload.SPIFFEID(), ids[dir[1]], clusters[dir[1]].workload.SPIFFEID())
			if cerr != nil || serr != nil {
				t.Errorf("after east's reload, %s -> %s: client: %v; server: %v", dir[0], dir[1], cerr, serr)
			}
		}
	})

	t.Run("sync paused keeps the old intermediate", func(t *testing.T) {
		old := mustCACerts(t, west.c)
		rv0, _, n0 := west.istiod.Synced()
		west.istiod.PauseSync()
		renewed := renewIntermediate(t, s, west.c, old.serial)
		deadline := time.Now().Add(pausedWatch)
		calls := 0
		for time.Now().Before(deadline) {
			cert, err := west.workload.Certificate(ctx, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			calls++
			if got := fmt.Sprintf("%x", cert.Intermediate().SerialNumber); got != old.serial {
				t.Fatalf("with its folder not synced, west's istiod signed with %s, want the old %s (the Secret has %s)", got, old.serial, renewed.serial)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if rv, _, n := west.istiod.Synced(); rv != rv0 || n != n0 {
			t.Fatalf("the paused folder was written: version %s (%d syncs), was %s (%d)", rv, n, rv0, n0)
		}
		t.Logf("west's istiod signed %d certificates with the old intermediate %s for %s while the Secret held %s", calls, old.serial, pausedWatch, renewed.serial)
		// Resumed, the folder catches up and istiod follows: the pause was
		// what held it back.
		west.istiod.ResumeSync()
		waitVolume(t, west.istiod, renewed)
		waitIstiodSerial(t, west, renewed.serial, istiodReloadBound)
	})
}

// newIdentity is the identity a workload holds: istiod's certificate and
// the roots of istio-ca-root-cert as its only trust.
func newIdentity(cert *istiodenv.Cert, roots []*x509.Certificate) *identity {
	return &identity{cert: cert.TLS, chain: cert.Chain, roots: roots, pool: poolOf(roots)}
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// renewIntermediate runs `agent --once` with a tiny renew fraction until
// the cluster's cacerts Secret holds an intermediate other than oldSerial,
// and returns it.
func renewIntermediate(t *testing.T, s *server, c *kubeenv.Cluster, oldSerial string) *cacerts {
	t.Helper()
	var cur *cacerts
	eventually(t, 45*time.Second, "a renewed intermediate in "+c.Name, func() error {
		env := []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken(c.Name)} // the agent wants a credential; it renews with its intermediate first
		if r := s.agentOnce(t, c.Name, c.KubeconfigPath, env, "--restart-istiod", "never", "--renew-fraction", "0.003"); r.code != 0 {
			return errors.New(r.String())
		}
		cur = mustCACerts(t, c)
		if cur.serial == oldSerial {
			return fmt.Errorf("cacerts still holds %s", oldSerial)
		}
		return nil
	})
	return cur
}

// waitVolume waits until istiod's ./etc/cacerts holds cc (through ..data)
// and returns when the harness swapped it in.
func waitVolume(t *testing.T, d *istiodenv.Istiod, cc *cacerts) time.Time {
	t.Helper()
	rv := d.WaitSynced(t, 30*time.Second)
	if rv != cc.secret.ResourceVersion {
		t.Fatalf("the volume holds Secret version %s, want %s", rv, cc.secret.ResourceVersion)
	}
	data, err := d.Volume.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := istiodenv.ParseCertificates(data["ca-cert.pem"]); err != nil || len(got) != 1 || fmt.Sprintf("%x", got[0].SerialNumber) != cc.serial {
		t.Fatalf("the volume's ca-cert.pem is not intermediate %s (%v)", cc.serial, err)
	}
	_, at, _ := d.Synced()
	return at
}

// waitIstiodSerial asks istiod for certificates until the leaf is signed by
// the intermediate with serial want, and returns when it first was.
func waitIstiodSerial(t *testing.T, ic *istiodCluster, want string, bound time.Duration) time.Time {
	t.Helper()
	var got string
	eventually(t, bound, ic.c.Name+"'s istiod signing with "+want, func() error {
		cert, err := ic.workload.Certificate(context.Background(), 10*time.Minute)
		if err != nil {
			return err
		}
		if got = fmt.Sprintf("%x", cert.Intermediate().SerialNumber); got != want {
			return fmt.Errorf("signed by %s", got)
		}
		return nil
	})
	return time.Now()
}
