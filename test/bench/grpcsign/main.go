// Command grpcsign measures SignIntermediate over gRPC (TLS, mTLS renewal
// authentication, N concurrent agents each on its own connection) against
// the in-process rate of the same operation (ca.Service.IssueIntermediate:
// CSR check, policy, signing, the store write and audit row) and the bare
// signature (ca.Authority.SignIntermediate), and against a real step-ca
// signing the same CSR (JWK one-time tokens minted by the load generator,
// TLS), all in one run on this machine. The PostgreSQL rows (postgres.go)
// run the same gRPC load against one replica and against three sharing one
// database, and time the watch fan-out across the replicas; -postgres=false
// leaves them out, -pg points them at another server.
//
//	go run ./test/bench/grpcsign -c 64 -d 10s
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
	"github.com/meshroot/meshroot/store/sqlite"
)

// profile, when set, receives a CPU profile of the gRPC row named
// profileRow.
var profile, profileRow string

// sqliteRow names the gRPC row on SQLite.
const sqliteRow = "gRPC SignIntermediate (mTLS renewal)"

// rounds is how many turns the gRPC rows take.
var rounds int

// pgOpts configures the PostgreSQL rows (adminDSN "": left out).
var pgOpts pgOptions

// withStepCA adds the step-ca row.
var withStepCA bool

func main() {
	conc := flag.Int("c", 64, "concurrent callers")
	dur := flag.Duration("d", 10*time.Second, "duration of each measurement")
	keyType := flag.String("root", "ec-p256", "root key type")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of one gRPC row (-profile-row) to this file")
	flag.StringVar(&profileRow, "profile-row", "sqlite", "the row -cpuprofile profiles: sqlite, pg1 or pg (the several-replica row)")
	withPG := flag.Bool("postgres", true, "add the PostgreSQL rows (1 replica, -replicas replicas, watch fan-out), each in a database created on -pg and dropped")
	pgDSN := flag.String("pg", pgtest.AdminDSN(), "maintenance database of the PostgreSQL server for the PostgreSQL rows (default from $"+pgtest.EnvDSN+")")
	flag.IntVar(&pgOpts.replicas, "replicas", 3, "replicas of the several-replica PostgreSQL row")
	flag.IntVar(&rounds, "rounds", 5, "rounds the gRPC rows take turns in (d/rounds each per round)")
	flag.IntVar(&pgOpts.changes, "changes", 50, "changes committed for the watch fan-out latency")
	flag.BoolVar(&withStepCA, "stepca", true, "add the step-ca row (builds step-ca into the tool cache when missing)")
	flag.Parse()
	profile = *cpuProfile
	if *withPG {
		if err := checkPostgres(context.Background(), *pgDSN); err != nil {
			log.Fatal(err)
		}
		pgOpts.adminDSN = *pgDSN
	}
	if err := run(*conc, *dur, keys.KeyType(*keyType)); err != nil {
		log.Fatal(err)
	}
}

type result struct {
	name     string
	calls    int
	errors   int
	elapsed  time.Duration
	lat      []time.Duration
	cpu      time.Duration
	cpuPerOp time.Duration
	// db is the database server's CPU for the calls, when dbKnown (a
	// PostgreSQL row on this machine).
	db      time.Duration
	dbKnown bool
}

// dbPerOp is the database server's CPU per call ("-": not known).
func (r result) dbPerOp() string {
	if !r.dbKnown || r.calls == 0 {
		return "-"
	}
	return (r.db / time.Duration(r.calls)).Round(time.Microsecond).String()
}

// add merges more calls of the same row into r.
func (r *result) add(o result) {
	r.name = o.name
	r.calls += o.calls
	r.errors += o.errors
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	slices.Sort(r.lat)
	r.cpu += o.cpu
	r.db += o.db
	r.dbKnown = o.dbKnown && (r.dbKnown || r.calls == o.calls)
	if r.calls > 0 {
		r.cpuPerOp = r.cpu / time.Duration(r.calls)
	}
}

func (r result) rate() float64 { return float64(r.calls) / r.elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

// measure runs fn from conc goroutines for d and collects latencies and
// the process CPU time per call.
func measure(name string, conc int, d time.Duration, fn func(worker int) error) result {
	var mu sync.Mutex
	res := result{name: name}
	cpu0 := cpuTime()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var errs int
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := fn(w); err != nil {
					errs++
					if errs == 1 {
						log.Printf("%s: %v", name, err)
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.calls = len(res.lat)
	res.cpu = cpuTime() - cpu0
	if res.calls > 0 {
		res.cpuPerOp = res.cpu / time.Duration(res.calls)
	}
	slices.Sort(res.lat)
	return res
}

// startProfile starts the CPU profile if row is the one to profile and
// returns what stops it.
func startProfile(row string) func() {
	want := map[string]string{"sqlite": sqliteRow, "pg1": "gRPC PostgreSQL, 1 replica"}[profileRow]
	if profileRow == "pg" {
		want = fmt.Sprintf("gRPC PostgreSQL, %d replicas", pgOpts.replicas)
	}
	if profile == "" || row != want {
		return func() {}
	}
	f, err := os.Create(profile)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(conc int, d time.Duration, kt keys.KeyType) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "meshroot-bench-")
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
	if _, err := svc.InitRoot(ca.WithActor(ctx, "bench"), ca.InitRootRequest{TrustDomain: "example.org", KeyType: kt}); err != nil {
		return err
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, "bench"), ca.AddClusterRequest{Name: "bench"}); err != nil {
		return err
	}
	key, _ := keys.ECP256.Generate()
	csrDER, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	_, auth, err := svc.ActiveAuthority(ctx)
	if err != nil {
		return err
	}

	sign := measure("in-process Authority.SignIntermediate", conc, d, func(int) error {
		_, err := auth.SignIntermediate(ca.IntermediateRequest{Cluster: "bench", TrustDomain: "example.org", CSR: csr})
		return err
	})
	service := measure("in-process Service.IssueIntermediate", conc, d, func(int) error {
		_, err := svc.IssueIntermediate(ca.WithActor(ctx, "bench"), ca.IssueRequest{Cluster: "bench", CSRData: csrDER})
		return err
	})

	rep, err := startReplica(st, svc, dir, "sqlite")
	if err != nil {
		return err
	}
	ag, err := dialAgents(ctx, svc, key.(crypto.Signer), csr, []*replica{rep}, conc)
	if err != nil {
		rep.shutdown()
		return err
	}
	// Every gRPC row's deployment is up at once and the rows take turns,
	// -rounds times d/rounds each, so that the load others put on the
	// machine weighs on every row alike and their ratios hold.
	grpcRows := []*grpcRow{{name: sqliteRow, agents: ag}}
	var pg *pgDeployments
	if pgOpts.adminDSN != "" {
		pg, err = startPostgresRows(ctx, pgOpts, conc, kt, key.(crypto.Signer), csr)
		if err != nil {
			ag.close()
			rep.shutdown()
			return err
		}
		grpcRows = append(grpcRows, pg.rows...)
	}
	measureRounds(ctx, grpcRows, d, csrDER)
	grpcRes := grpcRows[0].res
	var pgRes pgResults
	if pg != nil {
		pgRes.one, pgRes.many = pg.rows[0].res, pg.rows[1].res
		pgRes.fan, err = measureFanOut(ctx, pg.many.replicas, pg.rows[1].agents, pgOpts.changes)
		pg.close()
		if err != nil {
			ag.close()
			rep.shutdown()
			return fmt.Errorf("watch fan-out: %w", err)
		}
	}
	// The server stops before the step-ca row: its background work (the
	// bundle hub's poll) would otherwise count as the load generator's.
	ag.close()
	rep.shutdown()

	rows := []result{sign, service, grpcRes}
	if pg != nil {
		rows = append(rows, pgRes.one, pgRes.many)
	}
	var step result
	if withStepCA {
		if step, err = measureStepCA(conc, d, csrDER); err != nil {
			return fmt.Errorf("step-ca row: %w", err)
		}
		rows = append(rows, step)
	}

	fmt.Printf("root %s, %d concurrent callers, %s each (the gRPC rows in %d alternating rounds), GOMAXPROCS=%d\n\n", kt, conc, d, rounds, runtimeProcs())
	fmt.Printf("%-40s %10s %9s %9s %10s %12s %7s\n", "path", "calls/s", "p50", "p99", "CPU/call", "DB CPU/call", "errors")
	for _, r := range rows {
		fmt.Printf("%-40s %10.0f %9s %9s %10s %12s %7d\n", r.name, r.rate(), r.pct(0.50).Round(10*time.Microsecond),
			r.pct(0.99).Round(10*time.Microsecond), r.cpuPerOp.Round(time.Microsecond), r.dbPerOp(), r.errors)
	}
	fmt.Printf("(CPU/call: this process, SQLite included; DB CPU/call: the PostgreSQL backends serving the row's database, when the server runs here)\n")
	fmt.Printf("\ngRPC vs in-process service: %.0f%%   (target >= 70%%)\n", 100*grpcRes.rate()/service.rate())
	fmt.Printf("gRPC vs bare signing:       %.0f%%\n", 100*grpcRes.rate()/sign.rate())
	fmt.Printf("gRPC p99 at %d concurrent:  %s   (target < 50ms)\n", conc, grpcRes.pct(0.99).Round(10*time.Microsecond))
	if pg != nil {
		printPostgres(pgRes, grpcRes, pgOpts, conc)
	}
	if withStepCA && step.calls > 0 {
		fmt.Printf("gRPC vs step-ca:            %.2fx  (target >= 5x; p99 %s vs %s; CPU/call %s vs %s)\n", grpcRes.rate()/step.rate(),
			grpcRes.pct(0.99).Round(10*time.Microsecond), step.pct(0.99).Round(10*time.Microsecond),
			grpcRes.cpuPerOp.Round(time.Microsecond), step.cpuPerOp.Round(time.Microsecond))
		// On a machine loaded by others, calls/s follows the CPU share
		// each row gets: the step-ca row runs two processes (server and
		// load generator), the gRPC row one, and the scheduler gave the
		// step-ca row 1.1-1.5x the CPU of the gRPC row in the runs
		// docs/performance.md records. CPU per call does not depend on the share:
		// its ratio is the calls/s ratio the same cores give wherever the
		// CPU, not a wait, is what limits both.
		if grpcRes.cpuPerOp > 0 {
			fmt.Printf("gRPC vs step-ca, per CPU:   %.2fx  (calls per CPU-second: step-ca's CPU/call over ours; the load-independent ratio)\n",
				float64(step.cpuPerOp)/float64(grpcRes.cpuPerOp))
		}
	}
	return nil
}
