package main

// The step-ca row: a real step-ca (test/stepcaenv, set up as `step ca
// init` would with its badger database, plus a JWK provisioner whose
// template makes pathlen-0 intermediates) signs the same CSR, the load
// generator minting one JWK one-time token per call, over TLS, each
// caller on its own connection.

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meshroot/meshroot/test/stepcaenv"
)

// benchTB lets stepcaenv (written for tests) run in this command: setup
// failures end the process, cleanups run at the end.
type benchTB struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
	dirs       []string
}

func (b *benchTB) Helper()                           {}
func (b *benchTB) Fatal(args ...any)                 { b.done(); log.Fatal(args...) }
func (b *benchTB) Fatalf(format string, args ...any) { b.done(); log.Fatalf(format, args...) }
func (b *benchTB) Cleanup(f func())                  { b.cleanups = append(b.cleanups, f) }
func (b *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "meshroot-bench-stepca-")
	if err != nil {
		b.Fatal(err)
	}
	b.dirs = append(b.dirs, d)
	return d
}

// done runs the cleanups (stopping step-ca) and removes the folders.
func (b *benchTB) done() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
	for _, d := range b.dirs {
		os.RemoveAll(d)
	}
	b.dirs = nil
}

// stepCASigner posts sign requests to step-ca.
type stepCASigner struct {
	ca      *stepcaenv.CA
	signer  jose.Signer
	csrPEM  string
	clients []*http.Client
}

func newStepCASigner(c *stepcaenv.CA, csrDER []byte, conc int) (*stepCASigner, error) {
	key := c.ProvisionerKey(stepcaenv.Intermediate)
	jwk := jose.JSONWebKey{Key: key.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	s := &stepCASigner{ca: c, signer: signer, csrPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))}
	for range conc {
		s.clients = append(s.clients, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 1,
		}})
	}
	return s, nil
}

// token mints a one-time token for the JWK provisioner, as the step CLI
// does: subject the cluster, audience the sign endpoint, 5 minutes.
func (s *stepCASigner) token() (string, error) {
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	now := time.Now()
	claims := jwt.Claims{
		Issuer: stepcaenv.Intermediate, Subject: "bench", Audience: jwt.Audience{s.ca.URL + "/1.0/sign"},
		NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		ID: hex.EncodeToString(id[:]),
	}
	return jwt.Signed(s.signer).Claims(claims).Claims(map[string]any{"sans": []string{"bench"}}).Serialize()
}

// sign has step-ca sign the CSR for a year (meshroot's default lifetime)
// and returns the certificate.
func (s *stepCASigner) sign(worker int) (*x509.Certificate, error) {
	ott, err := s.token()
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"csr": s.csrPEM, "ott": ott, "notAfter": "8760h"})
	resp, err := s.clients[worker].Post(s.ca.URL+"/1.0/sign", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("step-ca /1.0/sign: %s: %s", resp.Status, b)
	}
	var out struct {
		Crt string `json:"crt"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(out.Crt))
	if block == nil {
		return nil, fmt.Errorf("step-ca /1.0/sign: no certificate in %q", b)
	}
	return x509.ParseCertificate(block.Bytes)
}

// measureStepCA runs the step-ca row. CPU per call adds step-ca's CPU to
// this process's (the load generator's), as the gRPC row counts server and
// callers together.
func measureStepCA(conc int, d time.Duration, csrDER []byte) (result, error) {
	tb := &benchTB{}
	defer tb.done()
	c := stepcaenv.Start(tb, stepcaenv.Options{})
	s, err := newStepCASigner(c, csrDER, conc)
	if err != nil {
		return result{}, err
	}
	first, err := s.sign(0)
	if err != nil {
		return result{}, fmt.Errorf("%v\nstep-ca log:\n%s", err, c.Log())
	}
	if !first.IsCA || first.MaxPathLen != 0 || !first.MaxPathLenZero || first.CheckSignatureFrom(c.Issuer) != nil {
		return result{}, fmt.Errorf("step-ca did not sign a pathlen-0 CA under its intermediate")
	}
	for w := range conc { // connect before measuring
		if _, err := s.sign(w); err != nil {
			return result{}, err
		}
	}
	stepCPU0 := procCPU(c.PID())
	res := measure("step-ca /1.0/sign (JWK token, TLS)", conc, d, func(w int) error {
		_, err := s.sign(w)
		return err
	})
	if res.calls > 0 {
		server := (procCPU(c.PID()) - stepCPU0) / time.Duration(res.calls)
		fmt.Printf("step-ca CPU/call: %s in step-ca, %s in the load generator (token, TLS, JSON)\n",
			server.Round(time.Microsecond), res.cpuPerOp.Round(time.Microsecond))
		res.cpuPerOp += server
	}
	return res, nil
}

// procCPU is a process's user+system CPU time from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}
