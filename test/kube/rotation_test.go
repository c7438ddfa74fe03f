// End-to-end proof that a root rotation causes no mTLS outage: two real
// kube-apiservers (east and west), one `meshroot serve`, an agent daemon
// per cluster, and per cluster a workload whose certificate Istio's own CA
// code (test/tools/istiosigner) signs from the cluster's current cacerts
// Secret, while TLS 1.3 mutual handshakes run between east and west in
// both directions. Helpers are in rotation_helpers_test.go and
// meshroot_test.go.

package kube

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// rotationConfig lets a rotation run in seconds: intermediates of 10 min
// (no renewal during a test; policy floor 1 min) and a short bundle
// refresh hint.
const rotationConfig = `policy:
  minTTL: 1m
  defaultTTL: 10m
  maxTTL: 1h
refreshHint: 5s
`

const (
	// retireWorkloadCertTTL is retire's --workload-cert-ttl: longer than
	// the workloads' refresh (1 s), so that when it has passed since the
	// last cluster switched, no workload presents a certificate from the
	// old root any more.
	retireWorkloadCertTTL = 4 * time.Second
	// phaseDwell is the least time traffic runs in each phase, and
	// minPhaseOK the least number of successful handshakes each phase must
	// have (about 18 are attempted per second).
	phaseDwell = 3 * time.Second
	minPhaseOK = 25
	// waitLong bounds waits for agents and workloads to follow a change.
	waitLong = 45 * time.Second
)

// rotEnv is two clusters with agents, a server, Istio's CA code, workloads
// and traffic between them.
type rotEnv struct {
	t        *testing.T
	s        *server
	clusters []*kubeenv.Cluster
	agents   map[string]*proc
	signer   *istioSigner
	work     map[string]*workload
	tr       *traffic
	stopTr   func()
	since    time.Time // start of the current phase
}

// newRotEnv starts everything. With serviceAccounts the clusters are
// registered for service-account token verification (the apiserver's
// JWKS) and the agents authenticate with projected tokens; otherwise with
// join tokens.
func newRotEnv(t *testing.T, serviceAccounts bool) *rotEnv {
	t.Helper()
	start := time.Now()
	e := &rotEnv{t: t, agents: map[string]*proc{}, work: map[string]*workload{}}
	e.clusters = []*kubeenv.Cluster{kubeenv.Start(t, "east"), kubeenv.Start(t, "west")}
	e.s = startServer(t, rotationConfig)
	dir := t.TempDir()
	for _, c := range e.clusters {
		c.EnsureNamespace(t, meshNS)
		args := []string{"--restart-istiod", "never"} // no istiod runs
		var env []string
		if serviceAccounts {
			jwks := writeFile(t, dir, c.Name+"-jwks.json", c.JWKS(t))
			e.s.cli("cluster", "add", c.Name, "--k8s-issuer", c.Issuer, "--k8s-jwks", jwks)
			tok := writeFile(t, dir, c.Name+".jwt", []byte(c.ServiceAccountToken(t, meshNS, agentSA, "meshroot", time.Hour)))
			args = append(args, "--token-file", tok)
		} else {
			e.s.cli("cluster", "add", c.Name)
			env = []string{"MESHROOT_JOIN_TOKEN=" + e.s.joinToken(c.Name)}
		}
		// No istiod runs, so the agent reports it unconfirmed: the
		// Secret applied is the gate here (issue 11: explicit, audited).
		e.s.cli("cluster", "gate", c.Name, "secret")
		e.agents[c.Name] = e.s.startAgent(t, c.Name, c.KubeconfigPath, env, args...)
	}
	// A test that fails while the agents are paused must not leave them
	// stopped for the SIGTERM of their cleanup (which runs after this).
	t.Cleanup(func() {
		for _, a := range e.agents {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	for _, c := range e.clusters {
		eventually(t, 30*time.Second, "first cacerts in "+c.Name, func() error {
			e.agentsAlive()
			if getSecret(t, c, meshNS, cacertsName) == nil {
				return errors.New("no cacerts Secret yet")
			}
			return nil
		})
	}
	e.s.waitWatchers(t, 2, 15*time.Second)
	e.signer = startIstioSigner(t)
	for _, c := range e.clusters {
		e.work[c.Name] = startWorkload(t, c, e.signer)
	}
	e.tr, e.stopTr = startTraffic(t, e.work["east"], e.work["west"])
	t.Cleanup(func() {
		if t.Failed() {
			e.stopTr()
			t.Logf("handshakes per phase when the test failed:\n%s", e.tr.summary())
		}
	})
	e.since = time.Now()
	t.Logf("set up in %s", time.Since(start).Round(100*time.Millisecond))
	return e
}

func (e *rotEnv) agentsAlive() {
	e.t.Helper()
	for _, a := range e.agents {
		a.alive(e.t)
	}
}

// signalAgents pauses (SIGSTOP) or resumes (SIGCONT) the agent daemons:
// a way to hold the clusters back so that a gate must refuse.
func (e *rotEnv) signalAgents(sig syscall.Signal) {
	e.t.Helper()
	for name, a := range e.agents {
		if err := a.cmd.Process.Signal(sig); err != nil {
			e.t.Fatalf("signal %v to agent %s: %v", sig, name, err)
		}
	}
}

// phase moves the traffic into the next phase after the current one has
// lasted phaseDwell.
func (e *rotEnv) phase(name string) {
	if d := phaseDwell - time.Since(e.since); d > 0 {
		time.Sleep(d)
	}
	e.tr.setPhase(name)
	e.since = time.Now()
	e.t.Logf("phase %s", name)
}

// finish stops the traffic after the last phase has lasted phaseDwell and
// checks it: no failed handshake in the phases listed in clean, at least
// minPhaseOK successes in every phase; it logs the counts.
func (e *rotEnv) finish(clean ...string) {
	e.t.Helper()
	if d := phaseDwell - time.Since(e.since); d > 0 {
		time.Sleep(d)
	}
	e.stopTr()
	e.agentsAlive()
	e.t.Logf("handshakes per phase (east<->west, both directions):\n%s", e.tr.summary())
	for _, w := range e.work {
		e.t.Logf("workload %s: %d CA reloads, %d istiod restarts, refresh errors %v", w.cluster.Name, w.reloadCount(), w.restartCount(), w.refreshErrors())
	}
	for _, p := range e.tr.order {
		ok, fail := e.tr.counts(p)
		if ok < minPhaseOK {
			e.t.Errorf("phase %s: %d successful handshakes, want at least %d", p, ok, minPhaseOK)
		}
		for _, c := range clean {
			if c == p && fail > 0 {
				e.t.Errorf("phase %s: %d failed handshakes, want none", p, fail)
			}
		}
	}
}

// --- what the server and the Secrets say ---

type rotationStatus struct {
	BundleSequence uint64 `json:"bundle_sequence"`
	NextPhase      string `json:"next_phase"`
	Roots          []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"roots"`
	Clusters []struct {
		Cluster          string   `json:"cluster"`
		BundleSequence   uint64   `json:"bundle_sequence_applied"`
		IntermediateRoot string   `json:"intermediate_root"`
		Blockers         []string `json:"blockers"`
	} `json:"clusters"`
	Blockers []struct {
		Cluster string `json:"cluster"`
		Reason  string `json:"reason"`
	} `json:"blockers"`
}

func (e *rotEnv) status() rotationStatus {
	e.t.Helper()
	out := e.s.cli("root", "status", "-o", "json")
	var st rotationStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("root status -o json: %v\n%s", err, out)
	}
	return st
}

func (st rotationStatus) root(state string) string {
	for _, r := range st.Roots {
		if r.State == state {
			return r.ID
		}
	}
	return ""
}

func rootID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:16])
}

// secretView is a cacerts Secret as istiod would load it.
type secretView struct {
	cert   *x509.Certificate
	chain  []*x509.Certificate
	roots  []*x509.Certificate
	rootID string // annotation: the root that signed the intermediate
}

// readSecret reads and checks cacerts: every file, the key matches, and the
// intermediate verifies to root-cert.pem through cert-chain.pem (what
// istiod checks when it loads the folder). Annotations are not checked
// against the chain's top: with a cross-signed root the chain ends with
// the old root while the intermediate comes from the new one.
func readSecret(c *kubeenv.Cluster) (*secretView, error) {
	sec, err := c.Client.CoreV1().Secrets(meshNS).Get(context.Background(), cacertsName, metav1GetOptions())
	if err != nil {
		return nil, err
	}
	v := &secretView{rootID: sec.Annotations[annRootID]}
	certs, err := parseCerts(sec.Data["ca-cert.pem"])
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("ca-cert.pem: %d certificates, %v", len(certs), err)
	}
	v.cert = certs[0]
	if v.chain, err = parseCerts(sec.Data["cert-chain.pem"]); err != nil {
		return nil, fmt.Errorf("cert-chain.pem: %w", err)
	}
	if v.roots, err = parseCerts(sec.Data["root-cert.pem"]); err != nil {
		return nil, fmt.Errorf("root-cert.pem: %w", err)
	}
	key, err := parseKey(sec.Data["ca-key.pem"])
	if err != nil {
		return nil, fmt.Errorf("ca-key.pem: %w", err)
	}
	if !publicKeyEqual(v.cert.PublicKey, key.Public()) {
		return nil, errors.New("ca-key.pem does not match ca-cert.pem")
	}
	if !bytes.Equal(v.chain[0].Raw, v.cert.Raw) {
		return nil, errors.New("cert-chain.pem does not start with ca-cert.pem")
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range v.roots {
		pool.AddCert(r)
	}
	for _, c := range v.chain[1:] {
		inter.AddCert(c)
	}
	if _, err := v.cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the intermediate does not verify to root-cert.pem: %w", err)
	}
	return v, nil
}

func (v *secretView) rootIDs() []string {
	var ids []string
	for _, r := range v.roots {
		ids = append(ids, rootID(r))
	}
	return ids
}

func sameIDs(have []string, want ...string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// waitClusters waits until every cluster's Secret, and the workload that
// reads it, satisfy check.
func (e *rotEnv) waitClusters(what string, check func(*secretView, *identity) error) {
	e.t.Helper()
	for _, c := range e.clusters {
		w := e.work[c.Name]
		eventually(e.t, waitLong, what+" in "+c.Name, func() error {
			e.agentsAlive()
			v, err := readSecret(c)
			if err != nil {
				return err
			}
			id := w.cur.Load()
			if err := check(v, id); err != nil {
				return err
			}
			// The workload runs with this Secret's intermediate and roots.
			if !id.intermediate().Equal(v.cert) {
				return fmt.Errorf("the workload's certificate is not from the Secret's intermediate yet")
			}
			if !sameIDs(certIDs(id.roots), v.rootIDs()...) {
				return fmt.Errorf("the workload trusts %d roots, the Secret has %d", len(id.roots), len(v.roots))
			}
			return nil
		})
	}
}

func certIDs(cs []*x509.Certificate) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, rootID(c))
	}
	return ids
}

// refused runs a CLI command that must be refused with exit code 3 and a
// message containing every string in want.
func (e *rotEnv) refused(want []string, args ...string) result {
	e.t.Helper()
	r := e.s.cliResult(args...)
	if r.code != 3 {
		e.t.Errorf("meshroot %s: exit %d, want 3 (refused)\n%s", strings.Join(args, " "), r.code, r)
		return r
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			e.t.Errorf("meshroot %s: refusal does not mention %q: %s", strings.Join(args, " "), w, r.stderr)
		}
	}
	return r
}

// --- the rotation ---

type rotation struct {
	oldID, newID string
	old, new     *x509.Certificate
}

// prepare runs `root prepare` with the agents held back, checks that
// activate refuses then, naming both clusters, lets the agents go and
// waits until root status shows every cluster applied the new bundle and
// both Secrets hold both roots.
func (e *rotEnv) prepare(crossSign bool) rotation {
	e.t.Helper()
	var rot rotation
	st := e.status()
	rot.oldID = st.root("active")
	e.signalAgents(syscall.SIGSTOP)
	e.phase("prepared")
	args := []string{"root", "prepare", "-o", "json"}
	if crossSign {
		args = append(args, "--cross-sign")
	}
	var prepared []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if out := e.s.cli(args...); json.Unmarshal([]byte(out), &prepared) != nil || len(prepared) != 1 || prepared[0].State != "prepared" {
		e.t.Fatalf("root prepare -o json printed %q", out)
	}
	rot.newID = prepared[0].ID
	e.refused([]string{"activate refused", "east: has applied trust bundle", "west: has applied trust bundle"}, "root", "activate")
	e.signalAgents(syscall.SIGCONT)
	e.waitApplied(rot)
	return rot
}

// waitApplied waits until root status shows every cluster applied the
// current bundle (with both roots) and both Secrets hold both roots.
func (e *rotEnv) waitApplied(rot rotation) {
	e.t.Helper()
	eventually(e.t, waitLong, "root status: every cluster applied the bundle with the new root", func() error {
		e.agentsAlive()
		st := e.status()
		if st.root("prepared") != rot.newID || st.NextPhase != "activate" {
			return fmt.Errorf("root %s is not the prepared root (next phase %s)", rot.newID, st.NextPhase)
		}
		if len(st.Clusters) != 2 {
			return fmt.Errorf("%d clusters in root status", len(st.Clusters))
		}
		for _, c := range st.Clusters {
			if c.BundleSequence != st.BundleSequence || len(c.Blockers) > 0 {
				return fmt.Errorf("%s applied bundle %d of %d; blockers %q", c.Cluster, c.BundleSequence, st.BundleSequence, c.Blockers)
			}
		}
		for _, c := range e.clusters {
			v, err := readSecret(c)
			if err != nil {
				return err
			}
			if !sameIDs(v.rootIDs(), rot.oldID, rot.newID) {
				return fmt.Errorf("%s's root-cert.pem has roots %v", c.Name, v.rootIDs())
			}
		}
		return nil
	})
	// What root status cannot show: that istiod has loaded the new
	// root-cert.pem and the proxies trust it. meshroot's activate gate
	// counts a cluster as caught up once its Secret is written; in a real
	// cluster the kubelet, istiod and the proxies take a while longer (here
	// up to one workload refresh). An operator must wait for that too; the
	// test waits until every workload trusts both roots.
	e.waitClusters("the workloads trust both roots", func(v *secretView, _ *identity) error {
		if !sameIDs(v.rootIDs(), rot.oldID, rot.newID) {
			return fmt.Errorf("root-cert.pem has roots %v", v.rootIDs())
		}
		return nil
	})
}

// activate runs `root activate` with the agents held back, checks that
// retire refuses then, naming both clusters, and lets the agents go.
func (e *rotEnv) activate(rot *rotation) {
	e.t.Helper()
	e.signalAgents(syscall.SIGSTOP)
	e.phase("activated")
	e.s.cli("root", "activate")
	e.refused([]string{"retire refused", "east: its intermediate", "west: its intermediate", "still chains to root " + rot.oldID[:12]},
		"root", "retire", "--workload-cert-ttl", retireWorkloadCertTTL.String())
	e.signalAgents(syscall.SIGCONT)
}

// waitSwitched waits until every cluster's intermediate comes from the new
// root, in root status, in the Secret, and in the workload's certificate.
func (e *rotEnv) waitSwitched(rot *rotation) {
	e.t.Helper()
	eventually(e.t, waitLong, "root status: every cluster's intermediate comes from the new root", func() error {
		e.agentsAlive()
		for _, c := range e.status().Clusters {
			if c.IntermediateRoot != rot.newID {
				return fmt.Errorf("%s's intermediate comes from root %.12s", c.Cluster, c.IntermediateRoot)
			}
		}
		return nil
	})
	e.waitClusters("the intermediate comes from the new root", func(v *secretView, _ *identity) error {
		if v.rootID != rot.newID {
			return fmt.Errorf("the Secret's intermediate comes from root %.12s", v.rootID)
		}
		if !sameIDs(v.rootIDs(), rot.oldID, rot.newID) {
			return fmt.Errorf("root-cert.pem has roots %v, want both", v.rootIDs())
		}
		for _, r := range v.roots {
			switch rootID(r) {
			case rot.oldID:
				rot.old = r
			case rot.newID:
				rot.new = r
			}
		}
		return nil
	})
}

// retire waits until a dry run of retire has no blockers (the workload
// certificate lifetime has passed since the last cluster switched),
// retires, and waits until both Secrets and workloads hold the new root only.
func (e *rotEnv) retire(rot *rotation) {
	e.t.Helper()
	ttl := retireWorkloadCertTTL.String()
	sawWait := false
	eventually(e.t, waitLong, "retire has no blockers", func() error {
		var res struct {
			Blockers []struct {
				Cluster string `json:"cluster"`
				Reason  string `json:"reason"`
			} `json:"blockers"`
		}
		out := e.s.cli("root", "retire", "--dry-run", "--workload-cert-ttl", ttl, "-o", "json")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			e.t.Fatalf("root retire --dry-run -o json: %v: %s", err, out)
		}
		for _, b := range res.Blockers {
			if b.Cluster != "" || !strings.Contains(b.Reason, "--workload-cert-ttl "+ttl) {
				e.t.Fatalf("retire is blocked by something other than the workload certificate lifetime: %+v", res.Blockers)
			}
			sawWait = true
		}
		if len(res.Blockers) > 0 {
			return errors.New(res.Blockers[0].Reason)
		}
		return nil
	})
	e.t.Logf("retire waited for the workload certificate lifetime: %v", sawWait)
	e.phase("retired")
	e.s.cli("root", "retire", "--workload-cert-ttl", ttl)
	e.waitClusters("root-cert.pem holds the new root only", func(v *secretView, _ *identity) error {
		if !sameIDs(v.rootIDs(), rot.newID) {
			return fmt.Errorf("root-cert.pem has roots %v, want only %.12s", v.rootIDs(), rot.newID)
		}
		if v.rootID != rot.newID || rootID(v.chain[len(v.chain)-1]) != rot.newID {
			return fmt.Errorf("the intermediate does not chain to the new root alone")
		}
		return nil
	})
	st := e.status()
	if st.NextPhase != "prepare" || st.root("active") != rot.newID || st.root("retired") != rot.oldID {
		e.t.Errorf("after retire: next phase %s, active %.12s, retired %.12s; want prepare, %.12s, %.12s",
			st.NextPhase, st.root("active"), st.root("retired"), rot.newID, rot.oldID)
	}
}

// checkOldRootOnlyPeer checks a workload certificate from a new
// intermediate against a peer that trusts ONLY the old root: with
// cross-signing it must verify (Go's x509, Istio's PeerCertVerifier and a
// real handshake), without it it must not.
func (e *rotEnv) checkOldRootOnlyPeer(rot *rotation, crossSigned bool) {
	e.t.Helper()
	east, west := e.work["east"].cur.Load(), e.work["west"].cur.Load()
	oldOnly := &identity{cert: west.cert, chain: west.chain, roots: []*x509.Certificate{rot.old}, pool: x509.NewCertPool()}
	oldOnly.pool.AddCert(rot.old)
	var raw [][]byte
	for _, c := range east.chain {
		raw = append(raw, c.Raw)
	}
	goErr := verifyPeer(raw, oldOnly.pool, e.work["east"].id)
	istioErr := e.signer.istioVerify(oldOnly.roots, east.chain)
	// east (new chain) as the client of a west workload that trusts only
	// the old root; west's own certificate is under the new root, so the
	// client side trusts both roots to isolate the server's judgement.
	cerr, serr := handshakeOnce(east, e.work["east"].id, oldOnly, e.work["west"].id)
	e.t.Logf("new-intermediate chain %s against a peer trusting only the old root: Go x509: %v; Istio: %v; handshake: client %v, server %v",
		describeChain(east.chain), goErr, istioErr, cerr, serr)
	if crossSigned {
		hasCross := false
		for _, c := range east.chain[1:] {
			hasCross = hasCross || (bytes.Equal(c.RawSubject, rot.new.RawSubject) && bytes.Equal(c.RawIssuer, rot.old.RawSubject) && !c.Equal(rot.new))
		}
		if !hasCross {
			e.t.Errorf("the workload's chain %s has no cross certificate (new root certified by the old)", describeChain(east.chain))
		}
		if goErr != nil || istioErr != nil || cerr != nil || serr != nil {
			e.t.Errorf("cross-signed: a workload certificate from the new intermediate must verify for a peer that trusts only the old root")
		}
		return
	}
	var ua x509.UnknownAuthorityError
	var ir *istioRefusal
	if !errors.As(goErr, &ua) || !errors.As(istioErr, &ir) || !errors.As(serr, &ua) {
		e.t.Errorf("not cross-signed: a peer that trusts only the old root must refuse the new chain with an unknown-authority error")
	}
}

// TestRotationNoOutage rotates the root (prepare, activate, retire) while
// east and west workloads, whose certificates Istio's CA code signs from
// each cluster's current cacerts, make mutual TLS handshakes both ways:
// not one fails, in any phase, and every phase carries traffic. The gates
// refuse (exit 3, naming the clusters) while the clusters have not caught
// up, and no istiod restart is needed (the root sets only grow, then shrink).
func TestRotationNoOutage(t *testing.T) {
	e := newRotEnv(t, false)
	rot := e.prepare(false)
	e.activate(&rot)
	e.waitSwitched(&rot)
	e.checkOldRootOnlyPeer(&rot, false)
	e.retire(&rot)
	e.finish("before", "prepared", "activated", "retired")
	for name, w := range e.work {
		if n := w.restartCount(); n != 0 {
			t.Errorf("workload %s: istiod had to restart %d times to take the new roots", name, n)
		}
	}
}

// TestRotationNoOutageCrossSign is TestRotationNoOutage with
// `root prepare --cross-sign`; between activate and retire a workload
// certificate from a new intermediate also verifies for a peer that trusts
// only the old root.
func TestRotationNoOutageCrossSign(t *testing.T) {
	e := newRotEnv(t, false)
	rot := e.prepare(true)
	e.activate(&rot)
	e.waitSwitched(&rot)
	e.checkOldRootOnlyPeer(&rot, true)
	e.retire(&rot)
	e.finish("before", "prepared", "activated", "retired")
	for name, w := range e.work {
		if n := w.restartCount(); n != 0 {
			t.Errorf("workload %s: istiod had to restart %d times to take the new roots", name, n)
		}
	}
}

// kill9 kills the server with SIGKILL and starts it again on the same data
// dir, ports and socket.
func (e *rotEnv) kill9() {
	e.t.Helper()
	if err := e.s.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	<-e.s.proc.done
	e.s.start()
	e.s.waitReady()
}

// TestRotationCrashResume kills the server with SIGKILL after prepare and
// again right after activate; each time it comes back on the same data dir
// and ports with the rotation where it was, the agents reconnect, and the
// rotation goes on to the end with no failed handshake.
//
// The first crash is timed so that the agents apply the new bundle while
// the server is dead: they are paused during prepare and resumed once the
// server is killed, so each reads the bundle the server had sent, writes
// both roots into cacerts, and fails to report it. After the restart the
// server knows nothing of that; activate's gate passes only if the agents
// report again.
func TestRotationCrashResume(t *testing.T) {
	e := newRotEnv(t, false)
	var rot rotation
	rot.oldID = e.status().root("active")
	e.signalAgents(syscall.SIGSTOP)
	e.phase("prepared")
	var prepared []struct {
		ID string `json:"id"`
	}
	if out := e.s.cli("root", "prepare", "-o", "json"); json.Unmarshal([]byte(out), &prepared) != nil || len(prepared) != 1 {
		t.Fatalf("root prepare -o json printed %q", out)
	}
	rot.newID = prepared[0].ID
	time.Sleep(500 * time.Millisecond) // the server sends the new bundle to the (paused) agents
	if err := e.s.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-e.s.proc.done
	e.signalAgents(syscall.SIGCONT)
	for _, c := range e.clusters {
		eventually(t, waitLong, c.Name+" applies the new bundle while the server is down", func() error {
			e.agentsAlive()
			v, err := readSecret(c)
			if err == nil && !sameIDs(v.rootIDs(), rot.oldID, rot.newID) {
				err = fmt.Errorf("root-cert.pem has roots %v", v.rootIDs())
			}
			return err
		})
	}
	e.s.start()
	e.s.waitReady()
	st := e.status()
	if st.root("prepared") != rot.newID || st.root("active") != rot.oldID || st.NextPhase != "activate" {
		t.Fatalf("after kill -9 and restart: prepared %.12s, active %.12s, next %s; want %.12s, %.12s, activate",
			st.root("prepared"), st.root("active"), st.NextPhase, rot.newID, rot.oldID)
	}
	e.s.waitWatchers(t, 2, waitLong)
	e.waitApplied(rot)

	e.phase("activated")
	e.s.cli("root", "activate")
	e.kill9()
	if st := e.status(); st.root("active") != rot.newID || st.root("retiring") != rot.oldID || st.NextPhase != "retire" {
		t.Fatalf("after activate, kill -9 and restart: active %.12s, retiring %.12s, next %s", st.root("active"), st.root("retiring"), st.NextPhase)
	}
	// Running a phase again is a no-op.
	if out := e.s.cli("root", "activate"); !strings.Contains(out, "nothing to do") {
		t.Errorf("root activate after activate: %q, want nothing to do", out)
	}
	e.s.waitWatchers(t, 2, waitLong)
	e.waitSwitched(&rot)
	e.retire(&rot)
	e.finish("before", "prepared", "activated", "retired")
}

// TestEmergencyRevoke revokes the active root with the agents running and
// registered for service-account tokens (a revoked intermediate cannot
// renew; a join token is spent): both clusters move to the replacement
// root; afterwards a workload certificate chained to the revoked root is
// refused by a peer that trusts the current root-cert.pem, with an
// unknown-authority error, while new workloads handshake fine.
func TestEmergencyRevoke(t *testing.T) {
	e := newRotEnv(t, true)
	oldID := e.status().root("active")
	oldEast := e.work["east"].cur.Load()
	if rootID(oldEast.chain[len(oldEast.chain)-1]) != oldID {
		t.Fatalf("east's workload chain does not end with the active root")
	}
	e.refused([]string{"--emergency"}, "root", "revoke", oldID)

	e.phase("revoking")
	e.s.cli("root", "revoke", oldID, "--emergency")
	st := e.status()
	newID := st.root("active")
	if newID == "" || newID == oldID || st.root("revoked") != oldID {
		t.Fatalf("after revoke: active %.12s, revoked %.12s (old %.12s)", newID, st.root("revoked"), oldID)
	}
	e.waitClusters("cacerts moved to the replacement root", func(v *secretView, _ *identity) error {
		if !sameIDs(v.rootIDs(), newID) || v.rootID != newID {
			return fmt.Errorf("root-cert.pem has %v, intermediate from %.12s; want only %.12s", v.rootIDs(), v.rootID, newID)
		}
		return nil
	})
	e.phase("after")
	time.Sleep(phaseDwell)

	eastNow, westNow := e.work["east"].cur.Load(), e.work["west"].cur.Load()
	// A workload still presenting east's certificate from before the
	// revocation (chained to the revoked root). It trusts the current
	// roots, so that only the peer's judgement of its certificate counts.
	stale := &identity{cert: oldEast.cert, chain: oldEast.chain, roots: westNow.roots, pool: westNow.pool}
	var ua x509.UnknownAuthorityError
	cerr, serr := handshakeOnce(stale, e.work["east"].id, westNow, e.work["west"].id)
	if cerr == nil || !errors.As(serr, &ua) {
		t.Errorf("a workload certificate chained to the revoked root, presented as a client to a peer that trusts the current root-cert.pem: client %v, server %v; want refused with an unknown-authority error", cerr, serr)
	}
	cerr2, serr2 := handshakeOnce(westNow, e.work["west"].id, stale, e.work["east"].id)
	if !errors.As(cerr2, &ua) {
		t.Errorf("a current workload connecting to a server whose certificate chains to the revoked root: client %v, server %v; want an unknown-authority error", cerr2, serr2)
	}
	t.Logf("certificate from the revoked root: refused as a client (server said: %v; client saw: %v) and as a server (client said: %v)", serr, cerr, cerr2)
	var ir *istioRefusal
	if err := e.signer.istioVerify(westNow.roots, oldEast.chain); !errors.As(err, &ir) || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("Istio's PeerCertVerifier with the current root-cert.pem on the revoked chain: %v; want an unknown-authority refusal", err)
	}
	if cerr, serr := handshakeOnce(eastNow, e.work["east"].id, westNow, e.work["west"].id); cerr != nil || serr != nil {
		t.Errorf("new workloads: client %v, server %v", cerr, serr)
	}
	e.finish("before", "after")
	ok, fail := e.tr.counts("revoking")
	t.Logf("during the revocation (the documented blast radius): %d ok, %d failed", ok, fail)

	// Every intermediate under the revoked root is revoked; the agents
	// re-issued with their service-account tokens.
	for _, c := range e.clusters {
		for serial, in := range e.s.intermediates(c.Name) {
			if in.RootID == oldID && in.Status != "revoked" {
				t.Errorf("%s's intermediate %s under the revoked root is %s", c.Name, serial, in.Status)
			}
		}
		var viaToken bool
		for _, r := range e.s.issued(c.Name, 0) {
			viaToken = viaToken || strings.Contains(r.Details, newID) && strings.Contains(r.Actor, "k8s-service-account")
		}
		if !viaToken {
			t.Errorf("%s: no intermediate from the replacement root issued on the service-account token", c.Name)
		}
	}
	for name, w := range e.work {
		if w.restartCount() == 0 {
			t.Errorf("workload %s: istiod took [old] -> [replacement] roots without a restart; Istio refuses a root set that is neither a subset nor a superset", name)
		}
	}
}
