// Command istiosigner signs workload certificates with Istio's own CA code
// (istio.io/istio/security/pkg/pki/ca), loaded from a plugged-in cacerts
// folder exactly as istiod loads it, so that meshroot's tests can check
// that what meshroot writes is what istiod accepts and signs under.
//
// It lives in a Go module of its own: Istio's dependencies (client-go and
// much more) stay out of meshroot's go.mod and test/kube's.
//
// One certificate:
//
//	istiosigner -cacerts DIR -csr FILE -id spiffe://td/ns/x/sa/y [-ttl 5m] [-out FILE]
//
// prints the leaf followed by cert-chain.pem (what istiod hands a workload,
// less the root, which istiod sends as a separate last element).
//
// istiod's own serving certificate (XDS and webhooks):
//
//	istiosigner -cacerts DIR -dns-names istiod.istio-system.svc,... [-ttl 5m] [-out FILE]
//
// signs it the way istiod does with plugged-in cacerts
// (pilot/pkg/bootstrap/certcontroller.go: s.CA.GenKeyCert(s.dnsNames, ...),
// the names from getDNSNames) and prints the leaf followed by
// cert-chain.pem; the key is discarded.
//
// A long-running signer (what the end-to-end tests use):
//
//	istiosigner -serve 127.0.0.1:PORT
//
// keeps one IstioCA per cacerts folder, built on first use with
// ca.NewPluggedCertIstioCAOptions + ca.NewIstioCA, and reloads it when the
// folder's files change the way istiod does with AUTO_RELOAD_PLUGIN_CERTS
// and ISTIO_MULTIROOT_MESH=true (pilot/pkg/bootstrap/istio_ca.go
// handleEvent): a changed root-cert.pem is taken only when the old and new
// root sets are a subset or superset of each other, and the files are
// loaded with KeyCertBundle.UpdateVerifiedKeyCertBundleFromFile, which
// verifies the intermediate against root-cert.pem; a refused or failed
// reload keeps the old CA, as istiod does. Endpoints (127.0.0.1 only):
//
//	POST /sign?cacerts=DIR&id=SPIFFE_ID&ttl=DUR   body: CSR PEM
//	     200 {"cert_chain": [leaf, chain..., rootBundle], "reloaded": bool}
//	         (IstioCertificateResponse's layout: one PEM certificate per
//	         element, the root-cert.pem bundle as the last element)
//	     409 when istiod would have refused the new files (it keeps signing
//	         with the old ones): {"error": ..., "restart_needed": bool}
//	POST /restart?cacerts=DIR   drop the CA for DIR: the next /sign loads it
//	                            from scratch, as a new istiod pod would
//	POST /verify                {"trust_domain", "roots_pem", "chain_der"}:
//	     istiod's peer check, pkg/spiffe PeerCertVerifier.VerifyPeerCert,
//	     with roots_pem mapped to trust_domain -> {"ok": bool, "error": ...}
//	GET  /healthz
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"istio.io/istio/pkg/spiffe"
	"istio.io/istio/security/pkg/pki/ca"
	"istio.io/istio/security/pkg/pki/util"
)

// istiod's defaults: DEFAULT_WORKLOAD_CERT_TTL 24h, MAX_WORKLOAD_CERT_TTL 90d.
const (
	defaultCertTTL = 24 * time.Hour
	maxCertTTL     = 90 * 24 * time.Hour
	caRSAKeySize   = 2048
	maxBody        = 64 << 10
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	serve := flag.String("serve", "", "serve on this address (127.0.0.1 only) instead of signing once")
	dir := flag.String("cacerts", "", "cacerts folder (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem; or tls.crt, tls.key, ca.crt)")
	csrFile := flag.String("csr", "", "CSR (PEM) to sign")
	id := flag.String("id", "", "SPIFFE ID of the workload")
	dnsNames := flag.String("dns-names", "", "sign istiod's own serving certificate for these comma-separated DNS names instead of a workload CSR")
	ttl := flag.Duration("ttl", 5*time.Minute, "requested lifetime")
	out := flag.String("out", "", "output file (default stdout)")
	flag.Parse()
	if *serve != "" {
		if err := runServer(*serve); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *dir != "" && *dnsNames != "" {
		if err := signServing(*dir, strings.Split(*dnsNames, ","), *ttl, *out); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *dir == "" || *csrFile == "" || *id == "" {
		fmt.Fprintln(os.Stderr, "usage: istiosigner -cacerts DIR -csr FILE -id SPIFFE_ID [-ttl 5m] [-out FILE]  |  istiosigner -cacerts DIR -dns-names NAMES [-ttl 5m] [-out FILE]  |  istiosigner -serve 127.0.0.1:PORT")
		os.Exit(2)
	}
	csr, err := os.ReadFile(*csrFile)
	if err != nil {
		log.Fatal(err)
	}
	c, err := newCA(*dir)
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := c.Sign(csr, ca.CertOpts{SubjectIDs: []string{*id}, TTL: *ttl})
	if err != nil {
		log.Fatal(err)
	}
	// What istiod hands a workload: the leaf, then cert-chain.pem.
	pemOut := append(leaf, c.GetCAKeyCertBundle().GetCertChainPem()...)
	if *out == "" {
		_, err = os.Stdout.Write(pemOut)
	} else {
		err = os.WriteFile(*out, pemOut, 0o644)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// signServing signs istiod's DNS serving certificate as istiod does with
// plugged-in certs: IstioCA.GenKeyCert(names, ttl, false) makes a key and
// signs it with the names as DNS SANs, returning the leaf and the chain.
func signServing(dir string, names []string, ttl time.Duration, out string) error {
	c, err := newCA(dir)
	if err != nil {
		return err
	}
	chain, _, err := c.GenKeyCert(names, ttl, false)
	if err != nil {
		return err
	}
	if out == "" {
		_, err = os.Stdout.Write(chain)
		return err
	}
	return os.WriteFile(out, chain, 0o644)
}

// fileBundle is istiod's detectSigningCABundleAndCRL: the kubernetes.io/tls
// layout when tls.crt exists, else the istio layout.
func fileBundle(dir string) (ca.SigningCAFileBundle, error) {
	tlsCrt := filepath.Join(dir, ca.TLSSecretCACertFile)
	if _, err := os.Stat(tlsCrt); err == nil {
		return ca.SigningCAFileBundle{
			RootCertFile:    filepath.Join(dir, ca.TLSSecretRootCertFile),
			CertChainFiles:  []string{tlsCrt, filepath.Join(dir, ca.TLSSecretRootCertFile)},
			SigningCertFile: tlsCrt,
			SigningKeyFile:  filepath.Join(dir, ca.TLSSecretCAPrivateKeyFile),
		}, nil
	} else if !os.IsNotExist(err) {
		return ca.SigningCAFileBundle{}, err
	}
	return ca.SigningCAFileBundle{
		RootCertFile:    filepath.Join(dir, ca.RootCertFile),
		CertChainFiles:  []string{filepath.Join(dir, ca.CertChainFile)},
		SigningCertFile: filepath.Join(dir, ca.CACertFile),
		SigningKeyFile:  filepath.Join(dir, ca.CAPrivateKeyFile),
	}, nil
}

// newCA is istiod's start with plugged-in certs.
func newCA(dir string) (*ca.IstioCA, error) {
	fb, err := fileBundle(dir)
	if err != nil {
		return nil, err
	}
	opts, err := ca.NewPluggedCertIstioCAOptions(fb, defaultCertTTL, maxCertTTL, caRSAKeySize)
	if err != nil {
		return nil, err
	}
	return ca.NewIstioCA(opts)
}

// filesHash fingerprints the files istiod watches in dir.
func filesHash(dir string) ([32]byte, error) {
	fb, err := fileBundle(dir)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	for _, f := range append([]string{fb.RootCertFile, fb.SigningCertFile, fb.SigningKeyFile}, fb.CertChainFiles...) {
		b, err := os.ReadFile(f)
		if err != nil {
			return [32]byte{}, err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// loaded is one "istiod": a CA for one cacerts folder.
type loaded struct {
	mu   sync.Mutex
	ca   *ca.IstioCA
	hash [32]byte
	// refused is the hash of files istiod would not take (kept so that the
	// refusal is reported on every request until the files change again).
	refused    [32]byte
	refusedMsg string
	restart    bool
}

type server struct {
	mu  sync.Mutex
	cas map[string]*loaded
}

func runServer(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-serve %s: only a loopback address is allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := &server{cas: map[string]*loaded{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /sign", s.sign)
	mux.HandleFunc("POST /restart", s.restart)
	mux.HandleFunc("POST /verify", verify)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Printf("istiosigner serving on %s", ln.Addr())
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *server) get(dir string) *loaded {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.cas[dir]
	if l == nil {
		l = &loaded{}
		s.cas[dir] = l
	}
	return l
}

// current returns the CA for dir, loading or reloading it as istiod would.
func (s *server) current(dir string) (c *ca.IstioCA, reloaded bool, status int, err error) {
	l := s.get(dir)
	l.mu.Lock()
	defer l.mu.Unlock()
	sum, err := filesHash(dir)
	if err != nil {
		if l.ca != nil { // istiod keeps its CA when a file vanishes
			return l.ca, false, 0, nil
		}
		return nil, false, http.StatusServiceUnavailable, err
	}
	if l.ca == nil {
		c, err := newCA(dir)
		if err != nil {
			return nil, false, http.StatusServiceUnavailable, fmt.Errorf("loading plugged-in cacerts: %w", err)
		}
		l.ca, l.hash = c, sum
		log.Printf("%s: CA loaded", dir)
		return c, true, 0, nil
	}
	if sum == l.hash {
		return l.ca, false, 0, nil
	}
	if sum == l.refused {
		return l.ca, false, http.StatusConflict, errors.New(l.refusedMsg)
	}
	// handleEvent, as istiod with ISTIO_MULTIROOT_MESH=true runs it.
	fb, err := fileBundle(dir)
	if err != nil {
		return l.ca, false, http.StatusConflict, err
	}
	newRoots, err := os.ReadFile(fb.RootCertFile)
	if err != nil {
		return l.ca, false, http.StatusConflict, err
	}
	cur := l.ca.GetCAKeyCertBundle().GetRootCertPem()
	if !bytes.Equal(cur, newRoots) && !subsetRelation(cur, newRoots) {
		l.refused, l.restart = sum, true
		l.refusedMsg = "istiod (ISTIO_MULTIROOT_MESH=true) refuses the new root-cert.pem: neither a subset nor a superset of the loaded roots; istiod must restart"
		log.Printf("%s: %s", dir, l.refusedMsg)
		return l.ca, false, http.StatusConflict, errors.New(l.refusedMsg)
	}
	if err := l.ca.GetCAKeyCertBundle().UpdateVerifiedKeyCertBundleFromFile(fb.SigningCertFile, fb.SigningKeyFile, fb.CertChainFiles, fb.RootCertFile, fb.CRLFile); err != nil {
		// A half-swapped folder, or files istiod rejects: keep the old CA
		// (the next request tries again: the hash is not recorded).
		log.Printf("%s: reload failed, keeping the loaded CA: %v", dir, err)
		return l.ca, false, http.StatusConflict, fmt.Errorf("Failed to update new Plug-in CA certs: %w", err)
	}
	l.hash, l.restart = sum, false
	log.Printf("%s: CA reloaded", dir)
	return l.ca, true, 0, nil
}

// subsetRelation is istiod's pemBundleHasSubsetRelation.
func subsetRelation(a, b []byte) bool {
	sa, sb := pemSet(a), pemSet(b)
	if len(sa) == 0 || len(sb) == 0 {
		return false
	}
	return superset(sa, sb) || superset(sb, sa)
}

func pemSet(data []byte) map[string]bool {
	out := map[string]bool{}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out[string(b.Bytes)] = true
		}
	}
}

func superset(a, b map[string]bool) bool {
	for k := range b {
		if !a[k] {
			return false
		}
	}
	return true
}

type signResponse struct {
	CertChain     []string `json:"cert_chain,omitempty"`
	Reloaded      bool     `json:"reloaded,omitempty"`
	Error         string   `json:"error,omitempty"`
	RestartNeeded bool     `json:"restart_needed,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *server) sign(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dir, id := q.Get("cacerts"), q.Get("id")
	ttl, err := time.ParseDuration(q.Get("ttl"))
	if dir == "" || id == "" || err != nil {
		writeJSON(w, http.StatusBadRequest, signResponse{Error: "need cacerts, id and ttl"})
		return
	}
	csr, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, signResponse{Error: err.Error()})
		return
	}
	c, reloaded, code, err := s.current(dir)
	if err != nil {
		l := s.get(dir)
		l.mu.Lock()
		restart := l.restart
		l.mu.Unlock()
		writeJSON(w, code, signResponse{Error: err.Error(), RestartNeeded: restart})
		return
	}
	// As istiod's CreateCertificate: Sign, then the cert chain, then the
	// root bundle as the last element, one certificate per element.
	_, _, chainPEM, rootPEM := c.GetCAKeyCertBundle().GetAll()
	leaf, err := c.Sign(csr, ca.CertOpts{SubjectIDs: []string{id}, TTL: ttl, ForCA: false})
	if err != nil {
		writeJSON(w, http.StatusBadRequest, signResponse{Error: "CSR signing error: " + err.Error()})
		return
	}
	resp := signResponse{Reloaded: reloaded}
	for _, p := range [][]byte{leaf, chainPEM} {
		for _, cert := range util.PemCertBytestoString(p) {
			resp.CertChain = append(resp.CertChain, cert+"\n")
		}
	}
	resp.CertChain = append(resp.CertChain, string(rootPEM))
	writeJSON(w, http.StatusOK, resp)
}

func (s *server) restart(w http.ResponseWriter, r *http.Request) {
	dir := r.URL.Query().Get("cacerts")
	s.mu.Lock()
	delete(s.cas, dir)
	s.mu.Unlock()
	log.Printf("%s: restarted", dir)
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

type verifyRequest struct {
	TrustDomain string   `json:"trust_domain"`
	RootsPEM    string   `json:"roots_pem"`
	ChainDER    [][]byte `json:"chain_der"`
}

// verify is istiod's peer check (pkg/spiffe PeerCertVerifier).
func verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	v := spiffe.NewPeerCertVerifier()
	if err := v.AddMappingFromPEM(req.TrustDomain, []byte(req.RootsPEM)); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	if err := v.VerifyPeerCert(req.ChainDER, nil); err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}
