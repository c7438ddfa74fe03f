// Command crl measures CRL generation and distribution at fleet scale:
// a root CRL with N revoked intermediates (default 10,000) and M clusters
// (default 100), each running the real agent code (agent.Agent: join,
// watch, reconcile, ca-crl.pem, status report) in this process against
// the real gRPC server, with an in-memory Kubernetes (internal/kubeclient/kubefake) as its
// Secret writer. It prints, from one run:
//
//   - the bytes written per cacerts Secret (ca-crl.pem and the whole
//     Secret) against Kubernetes' 1 MiB limit;
//
//   - the root CRL signing time (ca.Service.RootCRL: listing the revoked
//     intermediates, signing, storing) against the raw
//     x509.CreateRevocationList of the same entries (the ceiling);
//
//   - the time from `cluster quarantine` to every other cluster having
//     written the CRL that lists the quarantined intermediate into its
//     Secret, and to the server showing it applied by all of them (the
//     agents' reports).
//
//     go run ./test/bench/crl -revoked 10000 -clusters 100
package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/api/adminclient"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// serverLog receives the server's and agents' logs (-v).
var serverLog = slog.New(slog.DiscardHandler)

func main() {
	revoked := flag.Int("revoked", 10000, "revoked intermediates on the root's CRL after the quarantine")
	clusters := flag.Int("clusters", 100, "clusters, each with its own agent")
	keyType := flag.String("root", "ec-p256", "root key type")
	signs := flag.Int("signs", 5, "root CRL signings to time")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile from the fleet's start to the end")
	verbose := flag.Bool("v", false, "log the server's and agents' warnings to stderr")
	flag.Parse()
	if *verbose {
		serverLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if err := run(*revoked, *clusters, *signs, keys.KeyType(*keyType), *cpuProfile); err != nil {
		log.Fatal(err)
	}
}

// secretLog records, per cluster, every write of its cacerts Secret.
type secretLog struct {
	mu     sync.Mutex
	writes map[string][]secretWrite
}

type secretWrite struct {
	at   time.Time
	data map[string][]byte
}

func (l *secretLog) record(cluster string) func(context.Context, string, *kubeclient.Secret) {
	return func(_ context.Context, _ string, s *kubeclient.Secret) {
		l.mu.Lock()
		l.writes[cluster] = append(l.writes[cluster], secretWrite{time.Now(), s.Data})
		l.mu.Unlock()
	}
}

// firstListing returns when cluster first wrote a ca-crl.pem listing
// serial, and that Secret's data.
func (l *secretLog) firstListing(cluster string, serial *big.Int) (time.Time, map[string][]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.writes[cluster] {
		if crlLists(w.data[agent.CRLFile], serial) {
			return w.at, w.data
		}
	}
	return time.Time{}, nil
}

func crlLists(file []byte, serial *big.Int) bool {
	for len(file) > 0 {
		var b *pem.Block
		if b, file = pem.Decode(file); b == nil {
			return false
		}
		rl, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			continue
		}
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial) == 0 {
				return true
			}
		}
	}
	return false
}

func run(nRevoked, nClusters, nSigns int, kt keys.KeyType, cpuProfile string) error {
	ctx := ca.WithActor(context.Background(), "bench")
	dir, err := os.MkdirTemp("", "meshroot-bench-crl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "meshroot.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		return err
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		return err
	}
	root, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org", KeyType: kt})
	if err != nil {
		return err
	}

	// The revocation history: nRevoked-1 revoked intermediates of retired
	// clusters (store records: the CRL needs only their serial, root,
	// expiry and revocation record), the last nSigns of them revoked one
	// by one, each re-signing the root's CRL (timed); the quarantine adds
	// the last entry.
	t0 := time.Now()
	now := time.Now().UTC()
	// Each record carries a certificate PEM of an intermediate's size
	// (the root's: never parsed for a revoked one), so that listing them
	// reads what a real store reads.
	certPEM := root.ChainPEM
	revoke := func(tx store.Tx, i int) error {
		serial := fmt.Sprintf("7%031x", i)
		if err := tx.CreateIntermediate(ctx, store.Intermediate{Serial: serial, Cluster: "retired", RootID: root.ID,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), Status: store.IntermediateRevoked,
			CertPEM: certPEM, CreatedAt: now.Add(-time.Hour)}); err != nil {
			return err
		}
		return tx.RecordRevocation(ctx, store.Revocation{Serial: serial, Reason: ca.ReasonKeyCompromise, RevokedAt: now.Add(-time.Hour)})
	}
	history := nRevoked - 1 - nSigns
	if err := st.Update(ctx, func(tx store.Tx) error {
		for i := range history {
			if err := revoke(tx, i); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("revocation history: %w", err)
	}
	setup := time.Since(t0)

	// Signing: meshroot's RootCRL after each new revocation (listing the
	// revoked intermediates, signing, storing, marking them listed)
	// against the raw x509.CreateRevocationList of the same entries with
	// a key of the same type.
	var meshSign []time.Duration
	var crl store.CRL
	if crl, err = svc.RootCRL(ctx, root.ID); err != nil {
		return err
	}
	for i := range nSigns {
		if err := st.Update(ctx, func(tx store.Tx) error { return revoke(tx, history+i) }); err != nil {
			return err
		}
		t := time.Now()
		if crl, err = svc.RootCRL(ctx, root.ID); err != nil {
			return err
		}
		meshSign = append(meshSign, time.Since(t))
	}
	rl, err := x509.ParseRevocationList(crl.DER)
	if err != nil {
		return err
	}
	rawSign, err := rawCeiling(kt, rl.RevokedCertificateEntries, nSigns)
	if err != nil {
		return err
	}

	// The fleet: the real server, nClusters agents.
	srv, err := server.NewServer(server.ServerConfig{
		Service: svc, Store: st, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), ServerNames: []string{"127.0.0.1"},
		Limits: server.Limits{RefusalBurst: -1}, Log: serverLog,
	})
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go srv.Run(sctx)
	<-srv.Ready()
	// The quarantine goes through the admin socket, as `meshroot cluster
	// quarantine` does.
	conn, err := grpc.NewClient("unix:"+filepath.Join(dir, "admin.sock"), grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := adminclient.New(conn)
	tb, err := svc.TrustBundle(ctx)
	if err != nil {
		return err
	}
	var serverCA []byte
	for _, r := range tb.Roots {
		serverCA = append(serverCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	secrets := &secretLog{writes: map[string][]secretWrite{}}
	kubes := map[string]*kubefake.Clientset{}
	names := make([]string, nClusters)
	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopAgents(); wg.Wait() }()
	t0 = time.Now()
	cpu0 := cpuTime()
	for i := range names {
		names[i] = fmt.Sprintf("c%03d", i)
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: names[i]}); err != nil {
			return err
		}
		tok, err := svc.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: names[i], TTL: time.Hour})
		if err != nil {
			return err
		}
		kube := kubefake.New("")
		kube.OnSecretWrite = secrets.record(names[i])
		kubes[names[i]] = kube
		a, err := agent.New(agent.Config{Server: srv.Addr(), ServerCA: serverCA, Cluster: names[i], JoinToken: tok.Token, Kube: kube,
			Restart: agent.RestartNever, MaxBackoff: 2 * time.Second, Log: serverLog.With("cluster", names[i])})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.Close()
			_ = a.Run(actx)
		}()
	}
	// Steady state: every agent wrote a complete ca-crl.pem and reported it.
	for {
		complete := 0
		for _, n := range names {
			c, err := svc.Store().GetCluster(ctx, n)
			if err == nil && len(c.Status.AppliedCRLs) > 0 {
				complete++
			}
		}
		if complete == nClusters {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			return fmt.Errorf("after 10 min only %d of %d agents wrote a complete ca-crl.pem", complete, nClusters)
		}
		time.Sleep(200 * time.Millisecond)
	}
	joined, joinedCPU := time.Since(t0), cpuTime()-cpu0

	// The quarantine.
	target := names[0]
	tq, cpuQ := time.Now(), cpuTime()
	res, err := admin.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: target, Reason: "bench"})
	if err != nil {
		return err
	}
	serial, _ := new(big.Int).SetString(res.Revoked[0], 16)
	var lastWrite time.Duration
	var enforced, enforcedCPU time.Duration
	for {
		qs, err := svc.ListQuarantines(ctx)
		if err != nil {
			return err
		}
		if len(qs) == 1 && qs[0].Listed && len(qs[0].Pending()) == 0 {
			enforced, enforcedCPU = time.Since(tq), cpuTime()-cpuQ
			break
		}
		if time.Since(tq) > 5*time.Minute {
			return fmt.Errorf("after 5 min %d clusters still pending", len(qs[0].Pending()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var crlBytes, secretBytes []int
	for _, n := range names[1:] {
		at, data := secrets.firstListing(n, serial)
		if data == nil {
			return fmt.Errorf("%s shows applied but never wrote a ca-crl.pem listing %s", n, res.Revoked[0])
		}
		lastWrite = max(lastWrite, at.Sub(tq))
		total := 0
		for _, v := range data {
			total += len(v)
		}
		crlBytes, secretBytes = append(crlBytes, len(data[agent.CRLFile])), append(secretBytes, total)
	}
	pprof.StopCPUProfile()

	slices.Sort(meshSign)
	slices.Sort(rawSign)
	slices.Sort(crlBytes)
	slices.Sort(secretBytes)
	med := func(d []time.Duration) time.Duration { return d[len(d)/2] }
	fmt.Printf("root %s, %d revoked intermediates on its CRL, %d clusters (real agent code in-process, in-memory Secrets: kubefake), GOMAXPROCS=%d\n\n",
		kt, len(rl.RevokedCertificateEntries)+1, nClusters, runtime.GOMAXPROCS(0))
	fmt.Printf("root CRL DER                                  %8d bytes\n", len(crl.DER))
	fmt.Printf("ca-crl.pem per Secret (median, max)           %8d %8d bytes\n", crlBytes[len(crlBytes)/2], crlBytes[len(crlBytes)-1])
	fmt.Printf("whole cacerts Secret data (median, max)       %8d %8d bytes  (Kubernetes limit %d: %.0f%%)\n",
		secretBytes[len(secretBytes)/2], secretBytes[len(secretBytes)-1], agent.MaxSecretBytes, 100*float64(secretBytes[len(secretBytes)-1])/agent.MaxSecretBytes)
	fmt.Printf("root CRL signing, meshroot RootCRL (median)   %8s\n", med(meshSign).Round(100*time.Microsecond))
	fmt.Printf("root CRL signing, raw CreateRevocationList    %8s\n", med(rawSign).Round(100*time.Microsecond))
	fmt.Printf("  meshroot / raw                              %8.2fx\n", float64(med(meshSign))/float64(med(rawSign)))
	fmt.Printf("fleet start to all %d ca-crl.pem complete     %8s  (process CPU %s)\n", nClusters, joined.Round(time.Millisecond), joinedCPU.Round(time.Millisecond))
	fmt.Printf("quarantine to the last Secret written         %8s  (%d clusters)\n", lastWrite.Round(time.Millisecond), nClusters-1)
	fmt.Printf("quarantine to applied by all (agents' reports)%8s  (process CPU %s: server and all agents)\n", enforced.Round(time.Millisecond), enforcedCPU.Round(time.Millisecond))
	fmt.Printf("\n(revocation history of %d intermediates stored in %s)\n", history, setup.Round(time.Millisecond))
	return nil
}

// rawCeiling times x509.CreateRevocationList over entries with a fresh
// key of type kt: the least any CA can spend signing this CRL.
func rawCeiling(kt keys.KeyType, entries []x509.RevocationListEntry, n int) ([]time.Duration, error) {
	key, err := kt.Generate()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ceiling"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	var out []time.Duration
	for i := range n {
		t := time.Now()
		if _, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(int64(i + 1)), ThisUpdate: time.Now(),
			NextUpdate: time.Now().Add(ca.CRLValidity), RevokedCertificateEntries: entries}, cert, key); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// cpuTime is the CPU time this process used so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
