package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/spiffe"
)

// TestFlags: what the command refuses before it starts, with exit code 2
// for flags and 1 for files, and a message that names the problem.
func TestFlags(t *testing.T) {
	t.Parallel()
	c := testca.New(t, "")
	cert, key := c.LeafFiles(t)
	notPEM := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(notPEM, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--trust-domain", "example.org", "--upstream", "https://127.0.0.1:1/", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0"}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"nothing", nil, 2, "missing --trust-domain, --upstream, --cert, --key"},
		{"bad trust domain", append(base, "--trust-domain", "Not A TD"), 2, "--trust-domain"},
		{"both upstream kinds", append(base, "--upstream-ca", cert, "--upstream-id", "spiffe://example.org/x"), 2, "give one kind"},
		{"spiffe upstream without bootstrap", append(base, "--upstream-id", "spiffe://example.org/x"), 2, "--upstream-bundle"},
		{"bad upstream ID", append(base, "--upstream-id", "http://x", "--upstream-bundle", cert), 2, "--upstream-id"},
		{"upstream CA not PEM", append(base, "--upstream-ca", notPEM), 1, "holds no PEM certificate"},
		{"bootstrap not a bundle", append(base, "--upstream-bundle", notPEM), 1, "--upstream-bundle"},
		{"upstream not https", append(base, "--upstream", "http://127.0.0.1:1/"), 1, "want https://"},
		{"poll too short", append(base, "--poll", "10ms"), 1, "out of range"},
		{"bad log level", append(base, "--log-level", "loud"), 2, "--log-level"},
		{"stray argument", append(base, "extra"), 2, "unexpected argument"},
		{"unknown flag", append(base, "--nope"), 2, "nope"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		code := run(context.Background(), tc.args, &out)
		if code != tc.code || !strings.Contains(out.String(), tc.msg) {
			t.Errorf("%s: exit %d, want %d with %q; output:\n%s", tc.name, code, tc.code, tc.msg, out.String())
		}
	}
}

// TestServesUpstreamBundle runs the command against meshroot's bundle
// endpoint (https_web) and fetches the relayed bundle from it; it stops
// with exit code 0 when its context ends.
func TestServesUpstreamBundle(t *testing.T) {
	t.Parallel()
	upCA := testca.New(t, "")
	upCert, upKey := upCA.LeafFiles(t)
	root := testca.New(t, "").Cert
	tb := ca.TrustBundle{TrustDomain: "example.org", Roots: []*x509.Certificate{root}, Sequence: 4, RefreshHint: time.Minute}
	ep, err := spiffe.NewEndpoint(spiffe.EndpointConfig{Listen: "127.0.0.1:0", Profile: spiffe.ProfileWeb, CertFile: upCert, KeyFile: upKey,
		Handler: spiffe.NewHandler(func() (ca.TrustBundle, bool) { return tb, true }, 0, nil), Log: testca.QuietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = ep.Run(ctx) }()
	upCAFile := filepath.Join(t.TempDir(), "up-ca.pem")
	if err := os.WriteFile(upCAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upCA.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	relayCA := testca.New(t, "")
	cert, key := relayCA.LeafFiles(t)
	logs := &testca.SyncBuffer{}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(rctx, []string{"--trust-domain", "example.org", "--upstream", "https://" + ep.Addr() + "/", "--upstream-ca", upCAFile,
			"--cert", cert, "--key", key, "--listen", "127.0.0.1:0", "--poll", "1s"}, logs)
	}()
	var addr string
	testca.WaitFor(t, 10*time.Second, "the start line", func() bool {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "meshroot-bundle starting" {
				addr, _ = m["bundle_endpoint"].(string)
			}
		}
		return addr != ""
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: relayCA.Pool()}}}
	var body []byte
	testca.WaitFor(t, 10*time.Second, "the relayed bundle", func() bool {
		resp, err := client.Get("https://" + addr + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	want, err := spiffe.MarshalBundle(tb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, want) {
		t.Errorf("the relay serves\n%s\nwant the upstream's\n%s", body, want)
	}
	stop()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after the context ended, want 0:\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not stop after its context ended")
	}
}
