package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/meshroot/meshroot/agent"
	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
)

// crlCluster is one cluster of the quarantine test: its cacerts folder
// and an Issuer API client authenticated with its intermediate.
type crlCluster struct {
	name string
	cc   *cacerts
	api  meshrootv1.IssuerClient
}

func dialAs(t *testing.T, s *server, roots []*x509.Certificate, cert *tls.Certificate) meshrootv1.IssuerClient {
	t.Helper()
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(s.issuerAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshrootv1.NewIssuerClient(conn)
}

func newCRLCluster(t *testing.T, s *server, m *meshroot, name string) *crlCluster {
	t.Helper()
	cc := loadCACerts(t, m.issue(name, true))
	cert := &tls.Certificate{PrivateKey: cc.key, Leaf: cc.cert}
	for _, c := range cc.chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &crlCluster{name: name, cc: cc, api: dialAs(t, s, cc.roots, cert)}
}

// caCerts is the folder as the agent's library sees it.
func (c *crlCluster) caCerts() *ca.CACerts {
	return &ca.CACerts{Cert: c.cc.cert, Key: c.cc.key, Chain: c.cc.chain, Roots: c.cc.roots}
}

// sendOwnCRL does what the agent does in its status report: sign the
// cluster's CRL with the intermediate key (agent.OwnCRL) and send it.
func (c *crlCluster) sendOwnCRL(t *testing.T) {
	t.Helper()
	b, err := c.api.GetTrustBundle(t.Context(), &meshrootv1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	der, err := agent.OwnCRL(c.caCerts(), b.GetCrls().GetCrls(), time.Now())
	if err != nil || der == nil {
		t.Fatalf("%s: OwnCRL = %v (nil: %v)", c.name, err, der == nil)
	}
	if _, err := c.api.ReportStatus(t.Context(), &meshrootv1.ReportStatusRequest{Cluster: c.name, BundleSequence: b.GetSequence(),
		IntermediateSerial: ca.SerialHex(c.cc.cert.SerialNumber), Crl: der}); err != nil {
		t.Fatalf("%s: ReportStatus with its CRL: %v", c.name, err)
	}
}

// writeCRLFile does what the agent does with the bundle: plan ca-crl.pem
// with agent.PlanCRLFile over the served set and write it into the
// folder, or remove it when a CA lacks a current CRL. It returns the plan.
func (c *crlCluster) writeCRLFile(t *testing.T) agent.CRLPlan {
	t.Helper()
	b, err := c.api.GetTrustBundle(t.Context(), &meshrootv1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	set, err := wire.CRLSetFromProto(b.GetCrls())
	if err != nil {
		t.Fatal(err)
	}
	// The agent's two rules: all or nothing before the first ca-crl.pem;
	// once written (istiod may publish it and never retracts it), kept
	// with the freshest CRL of every CA that has one.
	cas := agent.CRLCAs(c.caCerts(), c.cc.roots, set)
	path := filepath.Join(c.cc.dir, agent.CRLFile)
	var p agent.CRLPlan
	if held, err := os.ReadFile(path); err == nil {
		p = agent.PlanPublishedCRLFile(cas, set.CRLs, held, time.Now())
	} else {
		p = agent.PlanCRLFile(cas, set.CRLs, time.Now())
	}
	if p.PEM != nil {
		writeFile(t, path, p.PEM)
	}
	return p
}

// reportApplied does what the agent does in its status report after it
// wrote ca-crl.pem: tell the server which root CRLs the folder now holds
// (agent.AppliedRootCRLs over the file).
func (c *crlCluster) reportApplied(t *testing.T) {
	t.Helper()
	file, err := os.ReadFile(filepath.Join(c.cc.dir, agent.CRLFile))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	req := &meshrootv1.ReportStatusRequest{Cluster: c.name, IntermediateSerial: ca.SerialHex(c.cc.cert.SerialNumber)}
	wire.SetAppliedCRLs(req, agent.AppliedRootCRLs(file, c.cc.roots))
	if _, err := c.api.ReportStatus(t.Context(), req); err != nil {
		t.Fatalf("%s: ReportStatus with its applied CRLs: %v", c.name, err)
	}
}

// enforcement returns, from `meshroot cluster list -o json`, the
// clusters that applied the quarantine of cluster and those pending.
func enforcement(t *testing.T, m *meshroot, cluster string) (applied, pending []string, listed bool) {
	t.Helper()
	var list []struct {
		Name       string `json:"name"`
		Quarantine *struct {
			Enforcement struct {
				Listed    bool     `json:"listed"`
				AppliedBy []string `json:"applied_by"`
				Pending   []struct {
					Cluster string `json:"cluster"`
				} `json:"pending"`
			} `json:"enforcement"`
		} `json:"quarantine"`
	}
	out := m.ok("cluster", "list", "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("cluster list -o json: %v\n%s", err, out)
	}
	for _, c := range list {
		if c.Name == cluster && c.Quarantine != nil {
			for _, p := range c.Quarantine.Enforcement.Pending {
				pending = append(pending, p.Cluster)
			}
			return c.Quarantine.Enforcement.AppliedBy, pending, c.Quarantine.Enforcement.Listed
		}
	}
	t.Fatalf("cluster list shows %s not quarantined:\n%s", cluster, out)
	return nil, nil, false
}

// opensslCRLVerify runs `openssl verify -crl_check_all` on chain (leaf
// first) with only what is in folder dir: root-cert.pem and ca-crl.pem.
func opensslCRLVerify(t *testing.T, dir string, chain []*x509.Certificate) error {
	t.Helper()
	d := t.TempDir()
	var inter []byte
	for _, c := range chain[1:] {
		inter = append(inter, pemCert(c)...)
	}
	out, err := exec.Command("openssl", "verify", "-crl_check_all",
		"-CAfile", filepath.Join(dir, "root-cert.pem"), "-CRLfile", filepath.Join(dir, agent.CRLFile),
		"-untrusted", writeFile(t, filepath.Join(d, "chain.pem"), inter),
		writeFile(t, filepath.Join(d, "leaf.pem"), pemCert(chain[0]))).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		return fmt.Errorf("openssl verify -crl_check_all: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// crlPeerVerifier applies Envoy's rule with the CRLs in dir: after the
// chain verifies against root-cert.pem, every certificate's issuer must
// have a current CRL there, and the certificate must not be on it.
func crlPeerVerifier(t *testing.T, dir string) func([][]byte, [][]*x509.Certificate) error {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, agent.CRLFile))
	if err != nil {
		t.Fatalf("ca-crl.pem: %v", err)
	}
	var crls []*x509.RevocationList
	for _, der := range pemBlocks(data) {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		crls = append(crls, rl)
	}
	return func(_ [][]byte, chains [][]*x509.Certificate) error {
		for _, chain := range chains {
			for i := 0; i+1 < len(chain); i++ {
				if err := crlCheck(crls, chain[i], chain[i+1]); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

func crlCheck(crls []*x509.RevocationList, cert, issuer *x509.Certificate) error {
	for _, rl := range crls {
		if rl.CheckSignatureFrom(issuer) != nil || !time.Now().Before(rl.NextUpdate) {
			continue
		}
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return fmt.Errorf("%s is revoked by %s", cert.Subject, issuer.Subject)
			}
		}
		return nil
	}
	return fmt.Errorf("no current CRL of %s", issuer.Subject)
}

func pemBlocks(data []byte) [][]byte {
	var out [][]byte
	for _, c := range strings.SplitAfter(string(data), "-----END X509 CRL-----") {
		if blk := decodePEM([]byte(c)); blk != nil {
			out = append(out, blk)
		}
	}
	return out
}

// handshake runs mTLS between a client of cluster from and a server of
// cluster to, each side trusting its own root-cert.pem and applying the
// all-CA CRL rule with its own ca-crl.pem.
func handshake(t *testing.T, from, to *crlCluster) error {
	t.Helper()
	cw, sw := signWorkload(t, from.cc, spiffeID(from.name)), signWorkload(t, to.cc, spiffeID(to.name))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{sw.cert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: to.cc.rootPool(), VerifyPeerCertificate: crlPeerVerifier(t, to.cc.dir), MinVersion: tls.VersionTLS13})
		err = s.HandshakeContext(context.Background())
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		srvErr <- err
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{cw.cert}, RootCAs: from.cc.rootPool(),
		InsecureSkipVerify: true, // the chain is verified below, against root-cert.pem, with the CRLs
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			chain := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				chain[i], _ = x509.ParseCertificate(r)
			}
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			chains, err := chain[0].Verify(x509.VerifyOptions{Roots: from.cc.rootPool(), Intermediates: inter})
			if err != nil {
				return err
			}
			return crlPeerVerifier(t, from.cc.dir)(raw, chains)
		}, MinVersion: tls.VersionTLS13})
	var cliErr error
	if err != nil {
		cliErr = err
	} else {
		_, cliErr = conn.Read(make([]byte, 1))
		conn.Close()
	}
	return errors.Join(cliErr, <-srvErr)
}

// TestQuarantineEnforcedByCRLs: three clusters with cacerts folders; each
// sends its own CRL as its agent does and writes ca-crl.pem from the
// served set. Before `cluster quarantine west` every workload chain
// verifies with `openssl verify -crl_check_all` and every mTLS handshake
// with the all-CA CRL rule succeeds; after it, west's are refused by east
// and north (using only their root-cert.pem and ca-crl.pem) while east and
// north keep accepting each other, and west gets no new intermediate with
// any credential. A cluster without a CRL keeps ca-crl.pem from being
// written before the first one; afterwards the file stays (istiod never
// retracts a CRL), the gap is named, and only that cluster's chains are
// refused until its CRL arrives.
func TestQuarantineEnforcedByCRLs(t *testing.T) {
	requireOpenSSL(t)
	dir := t.TempDir()
	s := startServe(t, dir, "--data-dir", filepath.Join(dir, "data"), "--insecure-plaintext-key", "--san", "127.0.0.1")
	m := newMeshroot(t)
	m.socket = s.socket
	m.initRoot()
	s.waitReady(t)
	cl := map[string]*crlCluster{}
	names := []string{"east", "west", "north"}
	for _, n := range names {
		cl[n] = newCRLCluster(t, s, m, n)
	}
	// Before every agent sent its CRL, the set is incomplete: nothing is written.
	if p := cl["east"].writeCRLFile(t); p.PEM != nil || len(p.Missing) == 0 {
		t.Fatalf("ca-crl.pem planned before the clusters sent their CRLs (missing %v)", p.Missing)
	}
	for _, n := range names {
		cl[n].sendOwnCRL(t)
	}
	waitCRLs := func(want func(agent.CRLPlan) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for _, n := range names {
			for {
				p := cl[n].writeCRLFile(t)
				if want(p) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s not reached; missing %v", n, what, p.Missing)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	waitCRLs(func(p agent.CRLPlan) bool { return p.PEM != nil }, "a complete ca-crl.pem")
	for _, n := range names {
		cl[n].reportApplied(t)
	}
	chains := map[string][]*x509.Certificate{}
	for _, n := range names {
		w := signWorkload(t, cl[n].cc, spiffeID(n))
		chains[n] = append([]*x509.Certificate{w.leaf}, cl[n].cc.chain...)
	}
	for _, verifier := range names {
		for _, peer := range names {
			if err := opensslCRLVerify(t, cl[verifier].cc.dir, chains[peer]); err != nil {
				t.Fatalf("before the quarantine, %s refuses %s's chain: %v", verifier, peer, err)
			}
			if err := handshake(t, cl[peer], cl[verifier]); err != nil {
				t.Fatalf("before the quarantine, mTLS %s -> %s: %v", peer, verifier, err)
			}
		}
	}

	start := time.Now()
	out := m.ok("cluster", "quarantine", "west", "--reason", "node compromised").stdout
	if !strings.Contains(out, ca.SerialHex(cl["west"].cc.cert.SerialNumber)) {
		t.Errorf("quarantine output does not list west's intermediate:\n%s", out)
	}
	westSerial := cl["west"].cc.cert.SerialNumber
	// Enforcement progress: pending for east and north (their ca-crl.pem
	// holds the root CRL from before) until each writes the CRL that
	// lists west and reports it; then applied, one by one.
	deadline := time.Now().Add(15 * time.Second)
	for {
		applied, pending, listed := enforcement(t, m, "west")
		if listed {
			if len(applied) != 0 || strings.Join(pending, ",") != "east,north" {
				t.Fatalf("right after the quarantine: applied by %v, pending %v; want none, east and north", applied, pending)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the roots' CRLs never listed west's intermediate")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := m.ok("root", "status").stdout; !strings.Contains(st, "quarantined west since") || !strings.Contains(st, "applied by none; pending: east (last seen") {
		t.Errorf("root status does not show west's quarantine pending in east and north:\n%s", st)
	}
	for i, n := range []string{"east", "north"} {
		deadline := time.Now().Add(15 * time.Second)
		for !listsSerial(cl[n].writeCRLFile(t), westSerial) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no ca-crl.pem listing west", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		applied, pending, _ := enforcement(t, m, "west")
		if len(applied) != i {
			t.Fatalf("%s wrote ca-crl.pem but has not reported it: applied by %v", n, applied)
		}
		cl[n].reportApplied(t)
		applied, pending, _ = enforcement(t, m, "west")
		if !slices.Contains(applied, n) || slices.Contains(pending, n) || len(applied) != i+1 {
			t.Fatalf("after %s reported its ca-crl.pem: applied by %v, pending %v", n, applied, pending)
		}
	}
	if st := m.ok("root", "status").stdout; !strings.Contains(st, "applied by east, north\n") {
		t.Errorf("root status after both applied:\n%s", st)
	}
	waitCRLs(func(p agent.CRLPlan) bool { return listsSerial(p, westSerial) }, "a ca-crl.pem listing west's intermediate")
	t.Logf("quarantine to CRLs applied by all three folders: %v", time.Since(start))

	for _, verifier := range []string{"east", "north"} {
		if err := opensslCRLVerify(t, cl[verifier].cc.dir, chains["west"]); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("%s: openssl accepts west's chain after the quarantine: %v", verifier, err)
		}
		if err := handshake(t, cl["west"], cl[verifier]); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("%s: mTLS from west accepted after the quarantine: %v", verifier, err)
		}
		for _, peer := range []string{"east", "north"} {
			if err := opensslCRLVerify(t, cl[verifier].cc.dir, chains[peer]); err != nil {
				t.Errorf("after the quarantine, %s refuses %s: %v", verifier, peer, err)
			}
			if err := handshake(t, cl[peer], cl[verifier]); err != nil {
				t.Errorf("after the quarantine, mTLS %s -> %s: %v", peer, verifier, err)
			}
		}
	}

	// West gets no new intermediate: CLI, mTLS with its old intermediate, join token.
	m.refused(3, []string{"quarantined", "node compromised"}, "intermediate", "issue", "--cluster", "west", "--out", t.TempDir(), "--insecure-plaintext-key")
	csrDER := newCSR(t)
	if _, err := cl["west"].api.SignIntermediate(t.Context(), &meshrootv1.SignIntermediateRequest{Cluster: "west", Csr: csrDER}); err == nil {
		t.Error("west renewed with its (revoked) intermediate")
	}
	tok := strings.TrimSpace(m.ok("token", "create", "--cluster", "west").stdout)
	anon := dialAs(t, s, cl["east"].cc.roots, nil)
	_, err := anon.SignIntermediate(metadata.AppendToOutgoingContext(t.Context(), "x-meshroot-join-token", tok), &meshrootv1.SignIntermediateRequest{Cluster: "west", Csr: csrDER})
	if err == nil || !strings.Contains(err.Error(), "quarantined") {
		t.Errorf("west with a fresh join token: %v, want a quarantine refusal", err)
	}

	// A new cluster whose agent has not sent its CRL yet. The folders
	// have written ca-crl.pem, which istiod may have published and never
	// retracts: they keep it, with every CRL there is, and name south as
	// missing. East and north keep accepting each other; south's chains
	// are refused (no CRL for its intermediate) until its CRL arrives.
	south := newCRLCluster(t, s, m, "south")
	waitCRLs(func(p agent.CRLPlan) bool {
		return p.PEM != nil && strings.Contains(strings.Join(p.Missing, ","), "south")
	}, "ca-crl.pem kept, south named as missing")
	southChain := append([]*x509.Certificate{signWorkload(t, south.cc, spiffeID("south")).leaf}, south.cc.chain...)
	for _, verifier := range []string{"east", "north"} {
		if _, err := os.Stat(filepath.Join(cl[verifier].cc.dir, agent.CRLFile)); err != nil {
			t.Fatalf("%s's ca-crl.pem taken out with south's CRL missing: %v", verifier, err)
		}
		for _, peer := range []string{"east", "north"} {
			if err := opensslCRLVerify(t, cl[verifier].cc.dir, chains[peer]); err != nil {
				t.Errorf("with south's CRL missing, %s refuses %s: %v", verifier, peer, err)
			}
			if err := handshake(t, cl[peer], cl[verifier]); err != nil {
				t.Errorf("with south's CRL missing, mTLS %s -> %s: %v", peer, verifier, err)
			}
		}
		if err := opensslCRLVerify(t, cl[verifier].cc.dir, southChain); err == nil {
			t.Errorf("%s accepts south's chain without a CRL for south's intermediate: the all-CA rule is not applied", verifier)
		}
	}
	south.sendOwnCRL(t)
	waitCRLs(func(p agent.CRLPlan) bool { return p.PEM != nil && len(p.Missing) == 0 }, "a complete ca-crl.pem with south's CRL")
	for _, verifier := range []string{"east", "north"} {
		if err := opensslCRLVerify(t, cl[verifier].cc.dir, southChain); err != nil {
			t.Errorf("%s refuses south's chain once its CRL is in: %v", verifier, err)
		}
	}
}

// listsSerial says a planned ca-crl.pem lists serial.
func listsSerial(p agent.CRLPlan, serial *big.Int) bool {
	for _, der := range pemBlocks(p.PEM) {
		rl, _ := x509.ParseRevocationList(der)
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial) == 0 {
				return true
			}
		}
	}
	return false
}

func decodePEM(data []byte) []byte {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "X509 CRL" {
		return nil
	}
	return blk.Bytes
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newP256(t))
	if err != nil {
		t.Fatal(err)
	}
	return der
}
