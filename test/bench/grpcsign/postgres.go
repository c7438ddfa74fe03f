package main

// The PostgreSQL rows (issue 13): the same gRPC renewal load against one
// replica, and against three replicas sharing one database (caller w on
// replica w mod 3), each row in a database of its own created on the
// server and dropped at the end, taking turns with the SQLite row (see
// measureRounds); then, on the three replicas, the watch fan-out: a
// change committed through replica A (a federated bundle, as the
// federation watcher on the leader stores it, the change
// BenchmarkFanOutAcrossReplicas in server/ measures up to the hub) and the
// time until the WatchTrustBundle streams of agents on B and C carry it.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// pgOptions configures the PostgreSQL rows.
type pgOptions struct {
	adminDSN string // maintenance database of the server
	replicas int    // replicas of the multi-replica row
	changes  int    // changes of the fan-out measurement
}

// pgResults are the PostgreSQL rows.
type pgResults struct {
	one, many result
	fan       fanOut
}

// checkPostgres fails, saying what the rows need, unless the server at
// adminDSN answers.
func checkPostgres(ctx context.Context, adminDSN string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, adminDSN)
	if err != nil {
		return fmt.Errorf("the PostgreSQL rows need a PostgreSQL server (13 or newer) whose user may create databases; "+
			"none answered at %s: %v\nStart one (Debian: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start), "+
			"point -pg at another server's maintenance database, or pass -postgres=false to leave these rows out", postgres.Redact(adminDSN), err)
	}
	return conn.Close(ctx)
}

// createDatabase creates an empty database on the server and returns its
// DSN, its name and the function that drops it.
func createDatabase(ctx context.Context, adminDSN string) (string, string, func(), error) {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", "", nil, err
	}
	defer conn.Close(ctx)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "meshroot_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		return "", "", nil, fmt.Errorf("create database %s: %w (the user must be allowed to create databases)", name, err)
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(dctx, adminDSN)
		if err == nil {
			_, err = c.Exec(dctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
			c.Close(dctx)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "drop database %s: %v (drop it by hand)\n", name, err)
		}
	}
	dsn, err := pgtest.WithDatabase(adminDSN, name)
	if err != nil {
		drop()
		return "", "", nil, err
	}
	return dsn, name, drop, nil
}

// pgDeployment is n replicas on one fresh database with a root and the
// cluster "bench", sharing one key folder as HA requires.
type pgDeployment struct {
	replicas []*replica
	database string
	drop     func()
}

func startPostgres(ctx context.Context, adminDSN string, n int, kt keys.KeyType) (*pgDeployment, error) {
	dsn, database, drop, err := createDatabase(ctx, adminDSN)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "meshroot-bench-pg-")
	if err != nil {
		drop()
		return nil, err
	}
	dep := &pgDeployment{database: database}
	dep.drop = func() {
		for _, r := range dep.replicas {
			r.shutdown()
			r.st.Close()
		}
		drop()
		os.RemoveAll(dir)
	}
	for i := range n {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			dep.drop()
			return nil, err
		}
		km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
		if err == nil && i == 0 {
			err = initAuthority(ctx, st, km, kt)
		}
		var svc *ca.Service
		if err == nil {
			svc, err = ca.NewService(st, km, ca.Policy{})
		}
		var r *replica
		if err == nil {
			r, err = startReplica(st, svc, dir, fmt.Sprint("replica", i))
		}
		if err != nil {
			st.Close()
			dep.drop()
			return nil, err
		}
		dep.replicas = append(dep.replicas, r)
	}
	return dep, nil
}

// initAuthority makes the root and the cluster "bench" in st.
func initAuthority(ctx context.Context, st store.Store, km keys.KeyManager, kt keys.KeyType) error {
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		return err
	}
	actx := ca.WithActor(ctx, "bench")
	if _, err := svc.InitRoot(actx, ca.InitRootRequest{TrustDomain: "example.org", KeyType: kt}); err != nil {
		return err
	}
	_, err = svc.AddCluster(actx, ca.AddClusterRequest{Name: "bench"})
	return err
}

// pgDeployments are the deployments of the PostgreSQL rows, each with its
// agents: one replica, and pgOptions.replicas replicas.
type pgDeployments struct {
	one, many *pgDeployment
	rows      []*grpcRow // the one-replica row, then the several-replica row
}

// startPostgresRows starts both deployments and connects conc agents to
// each.
func startPostgresRows(ctx context.Context, opts pgOptions, conc int, kt keys.KeyType, key crypto.Signer, csr *x509.CertificateRequest) (*pgDeployments, error) {
	p := &pgDeployments{}
	for _, n := range []int{1, opts.replicas} {
		dep, err := startPostgres(ctx, opts.adminDSN, n, kt)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("PostgreSQL, %d replicas: %w", n, err)
		}
		ag, err := dialAgents(ctx, dep.replicas[0].svc, key, csr, dep.replicas, conc)
		if err != nil {
			dep.drop()
			p.close()
			return nil, fmt.Errorf("PostgreSQL, %d replicas: %w", n, err)
		}
		name := "gRPC PostgreSQL, 1 replica"
		if p.one == nil {
			p.one = dep
		} else {
			p.many, name = dep, fmt.Sprintf("gRPC PostgreSQL, %d replicas", n)
		}
		p.rows = append(p.rows, &grpcRow{name: name, agents: ag, dbCPU: func() (time.Duration, bool) {
			return backendCPU(ctx, opts.adminDSN, dep.database)
		}})
	}
	return p, nil
}

// close disconnects the agents, stops the replicas and drops the
// databases.
func (p *pgDeployments) close() {
	for _, r := range p.rows {
		r.agents.close()
	}
	for _, d := range []*pgDeployment{p.one, p.many} {
		if d != nil {
			d.drop()
		}
	}
}

// fanOut is the latency from a commit on replica A until the watchers on
// every other replica have the change.
type fanOut struct {
	lat    []time.Duration // sorted
	missed int             // changes a watcher did not get within fanOutWait
}

func (f fanOut) pct(p float64) time.Duration {
	if len(f.lat) == 0 {
		return 0
	}
	return f.lat[min(len(f.lat)-1, int(float64(len(f.lat))*p))]
}

// fanOutWait bounds one change's delivery: past the 2 s poll, so a change
// the feed lost still arrives (and shows as a slow one).
const fanOutWait = 5 * time.Second

// fanOutSpacing separates the changes: the hub coalesces the feed's
// notifications to one refresh per 100 ms, which back-to-back changes
// would measure instead of the delivery.
const fanOutSpacing = 200 * time.Millisecond

// measureFanOut commits changes through replicas[0] and times their
// arrival on a WatchTrustBundle stream of an agent on each other replica
// (agent w is on replica w mod len(replicas)).
func measureFanOut(ctx context.Context, replicas []*replica, ag *agents, changes int) (fanOut, error) {
	var res fanOut
	if len(replicas) < 2 || len(ag.clients) < len(replicas) {
		return res, fmt.Errorf("the fan-out needs 2 replicas and an agent on each (have %d replicas, %d agents)", len(replicas), len(ag.clients))
	}
	const peer = "peer.example"
	tb := &benchTB{}
	defer tb.done()
	td := spiffeid.RequireTrustDomainFromString(peer)
	var docs [2][]byte
	for i := range docs {
		doc, err := spiffebundle.FromX509Authorities(td, []*x509.Certificate{testca.New(tb, peer).Cert}).Marshal()
		if err != nil {
			return res, err
		}
		docs[i] = doc
	}
	stA := replicas[0].st
	actx := ca.WithActor(ctx, "bench")
	if err := stA.Update(actx, func(tx store.Tx) error {
		return tx.CreateFederationPeer(actx, store.FederationPeer{TrustDomain: peer, URL: "https://" + peer + "/bundle",
			Profile: store.ProfileHTTPSWeb, CreatedAt: time.Now(), Bundle: docs[1], Sequence: 1})
	}); err != nil {
		return res, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// seen[r] receives the peer's bundle sequence each time replica r+1's
	// stream sends a bundle.
	seen := make([]chan uint64, len(replicas)-1)
	for i := range seen {
		stream, err := ag.clients[i+1].WatchTrustBundle(wctx, &meshrootv1.WatchTrustBundleRequest{Cluster: "bench"})
		if err != nil {
			return res, err
		}
		ch := make(chan uint64, 64)
		seen[i] = ch
		go func() {
			for {
				msg, err := stream.Recv()
				if err != nil {
					close(ch)
					return
				}
				for _, f := range msg.GetFederated() {
					if f.GetTrustDomain() == peer {
						ch <- f.GetSequence()
					}
				}
			}
		}()
	}
	// waitFor reads ch until it carries seq or later.
	waitFor := func(ch chan uint64, seq uint64, deadline <-chan time.Time) bool {
		for {
			select {
			case s, ok := <-ch:
				if !ok {
					return false
				}
				if s >= seq {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	for i := range seen {
		if !waitFor(seen[i], 1, time.After(fanOutWait)) {
			return res, fmt.Errorf("the watcher on replica %d never saw the federation peer", i+1)
		}
	}
	for i := range changes {
		time.Sleep(fanOutSpacing)
		seq := uint64(i + 2)
		start := time.Now()
		if err := stA.Update(actx, func(tx store.Tx) error {
			return tx.SetFederatedBundle(actx, peer, docs[i%2], seq, time.Now())
		}); err != nil {
			return res, err
		}
		deadline := time.After(fanOutWait)
		all := true
		for _, ch := range seen {
			all = waitFor(ch, seq, deadline) && all
		}
		if !all {
			res.missed++
			continue
		}
		res.lat = append(res.lat, time.Since(start))
	}
	slices.Sort(res.lat)
	return res, nil
}

// printPostgres prints the PostgreSQL ratios and the fan-out.
func printPostgres(pg pgResults, sqlite result, opts pgOptions, conc int) {
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	if sqlite.calls > 0 {
		fmt.Printf("PostgreSQL 1 replica vs SQLite:   %.2fx  (p99 %s vs %s)\n", pg.one.rate()/sqlite.rate(), r(pg.one.pct(0.99)), r(sqlite.pct(0.99)))
		fmt.Printf("PostgreSQL %d replicas vs SQLite:  %.2fx  (target >= 1; p99 %s vs %s at %d agents)\n", opts.replicas,
			pg.many.rate()/sqlite.rate(), r(pg.many.pct(0.99)), r(sqlite.pct(0.99)), conc)
		if pg.one.dbKnown && pg.many.dbKnown {
			// On a machine whose CPU is the limit, the calls per
			// CPU-second are the calls/s the same cores give.
			total := func(x result) time.Duration { return x.cpuPerOp + x.db/time.Duration(max(x.calls, 1)) }
			fmt.Printf("CPU per call, process + database: SQLite %s, PostgreSQL 1 replica %s, %d replicas %s (per CPU: %.2fx and %.2fx of SQLite)\n",
				sqlite.cpuPerOp.Round(time.Microsecond), total(pg.one).Round(time.Microsecond), opts.replicas, total(pg.many).Round(time.Microsecond),
				float64(sqlite.cpuPerOp)/float64(total(pg.one)), float64(sqlite.cpuPerOp)/float64(total(pg.many)))
		}
	}
	fmt.Printf("watch fan-out across %d replicas:  p50 %s, p99 %s over %d changes committed on A, until the watchers on all %d others have them (%d missed %s; target < 1s)\n",
		opts.replicas, r(pg.fan.pct(0.50)), r(pg.fan.pct(0.99)), len(pg.fan.lat), opts.replicas-1, pg.fan.missed, fanOutWait)
}
