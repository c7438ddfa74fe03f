package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/meshroot/meshroot/api/adminclient"
	"github.com/meshroot/meshroot/internal/testca"
	mrserver "github.com/meshroot/meshroot/server"
)

// haRig is three `meshroot serve` processes (replicas) on one PostgreSQL
// database, sharing an encrypted key folder, with a federation peer whose
// bundle endpoint runs in the test and records who fetches it.
type haRig struct {
	dir      string
	dsn      string
	reps     []*server
	ids      []string
	m        *meshroot // CLI, pointed at a live replica's socket
	serverCA string    // file: the trust domain's roots
	peer     *peerEndpoint
}

// peerEndpoint serves a SPIFFE bundle over TLS and records each fetch's
// User-Agent ("meshroot-federation (replica ID)") and time.
type peerEndpoint struct {
	mu      sync.Mutex
	fetches []peerFetch
	srv     *httptest.Server
	caFile  string
}

type peerFetch struct {
	agent string
	at    time.Time
}

func newPeerEndpoint(t *testing.T, dir string) *peerEndpoint {
	t.Helper()
	peerCA := testca.New(t, "")
	peerRoot := testca.New(t, "peer.example")
	doc, err := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("peer.example"), []*x509.Certificate{peerRoot.Cert}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p := &peerEndpoint{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.fetches = append(p.fetches, peerFetch{r.UserAgent(), time.Now()})
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{peerCA.Leaf(t, testca.LeafOpts{IP: true})}}
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.caFile = writeFile(t, filepath.Join(dir, "peer-ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peerCA.Cert.Raw}))
	return p
}

// firstFetchAfter returns the first fetch made after t0 by one of agents.
func (p *peerEndpoint) firstFetchAfter(t0 time.Time, agents []string) (peerFetch, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.fetches {
		for _, a := range agents {
			if f.at.After(t0) && f.agent == a {
				return f, true
			}
		}
	}
	return peerFetch{}, false
}

// fedAgent is the User-Agent of replica id's federation fetches.
func fedAgent(id string) string { return "meshroot-federation (replica " + id + ")" }

// startHARig starts three replicas on dsn, initialises the root through
// the first, and adds the federation peer.
func startHARig(t *testing.T, dsn string) *haRig {
	t.Helper()
	r := &haRig{dir: t.TempDir(), dsn: dsn}
	dsnFile := writeFile(t, filepath.Join(r.dir, "dsn"), []byte(dsn+"\n"))
	passFile := writeFile(t, filepath.Join(r.dir, "pass"), []byte("correct horse battery\n"))
	for _, f := range []string{dsnFile, passFile} {
		if err := os.Chmod(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.peer = newPeerEndpoint(t, r.dir)
	for _, id := range []string{"r1", "r2", "r3"} {
		conf := writeFile(t, filepath.Join(r.dir, id+".yaml"), []byte("replicaID: "+id+"\nkeys:\n  dir: "+filepath.Join(r.dir, "shared-keys")+
			"\nfederation:\n  minRefresh: 250ms\n  maxRefresh: 500ms\n  caFile: "+r.peer.caFile+"\n"))
		r.reps = append(r.reps, startServe(t, r.dir, "--data-dir", filepath.Join(r.dir, id), "--store-file", dsnFile, "--passphrase-file", passFile,
			"--config", conf, "--san", "127.0.0.1"))
		r.ids = append(r.ids, id)
	}
	r.m = newMeshroot(t)
	r.m.socket = r.reps[0].socket
	r.m.ok("root", "init", "--trust-domain", trustDomain)
	for _, s := range r.reps {
		s.waitReady(t)
	}
	r.m.ok("federation", "add", "peer.example", "--url", r.peer.srv.URL+"/bundle", "--profile", "https_web")
	r.serverCA = writeFile(t, filepath.Join(r.dir, "server-ca.pem"), []byte(r.m.ok("bundle", "show", "-o", "pem").stdout))
	return r
}

// admin is an Admin API client on replica s's socket.
func (r *haRig) admin(t *testing.T, s *server) *adminclient.Client {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(mrserver.UnixPeerCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminclient.New(conn)
}

// role returns "leader" or "follower" from s's /readyz, or "" when it does
// not answer 200.
func role(s *server) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.httpAddr + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode != http.StatusOK:
		return ""
	case strings.Contains(string(body), "(leader)"):
		return "leader"
	case strings.Contains(string(body), "(follower)"):
		return "follower"
	}
	return ""
}

// leader waits until exactly one of the live replicas leads and returns
// its index.
func (r *haRig) leader(t *testing.T, within time.Duration, dead map[int]bool) int {
	t.Helper()
	idx := -1
	eventually(t, within, "exactly one replica leading", func() bool {
		idx = -1
		for i, s := range r.reps {
			if dead[i] {
				continue
			}
			if role(s) == "leader" {
				if idx >= 0 {
					return false
				}
				idx = i
			}
		}
		return idx >= 0
	})
	return idx
}

// newLeaderAfter polls the replicas not in dead until one leads, and
// returns its index and when it was first seen leading.
func (r *haRig) newLeaderAfter(t *testing.T, within time.Duration, dead map[int]bool) (int, time.Time) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for i, s := range r.reps {
			if !dead[i] && role(s) == "leader" {
				return i, time.Now()
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no surviving replica leads within %s", within)
	return -1, time.Time{}
}

// survivingAgents are the federation User-Agents of the replicas not in dead.
func (r *haRig) survivingAgents(dead map[int]bool) []string {
	var out []string
	for i, id := range r.ids {
		if !dead[i] {
			out = append(out, fedAgent(id))
		}
	}
	return out
}

// waitFederationFetch waits until a replica not in dead fetches the
// peer's bundle after t0 and returns how long after t0 it did.
func (r *haRig) waitFederationFetch(t *testing.T, t0 time.Time, within time.Duration, dead map[int]bool) time.Duration {
	t.Helper()
	var f peerFetch
	eventually(t, within, fmt.Sprintf("a surviving replica (%v) fetching the federation peer's bundle", r.survivingAgents(dead)), func() bool {
		var ok bool
		f, ok = r.peer.firstFetchAfter(t0, r.survivingAgents(dead))
		return ok
	})
	return f.at.Sub(t0)
}
