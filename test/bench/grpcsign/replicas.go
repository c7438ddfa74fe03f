package main

// Replicas and agents: the servers a gRPC row measures (one on SQLite, or
// several sharing one PostgreSQL database, each with its own store
// connection, bundle hub and listeners, wired as `meshroot serve` wires
// them), and the agents calling them, each on its own mTLS connection.

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store"
)

// replica is one running server on its own store handle.
type replica struct {
	st   store.Store
	svc  *ca.Service
	srv  *server.Server
	stop context.CancelFunc
	done chan struct{}
}

// startReplica serves svc (on st) on loopback ports, its bundle hub
// following st's change feed when st has one (PostgreSQL), as `meshroot
// serve` does; name keeps the admin sockets of replicas apart in dir.
func startReplica(st store.Store, svc *ca.Service, dir, name string) (*replica, error) {
	ctx, stop := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	hub := server.NewBundleHub(svc, log)
	if feed, ok := store.ChangeFeedOf(st); ok {
		hub.Follow(feed.Changes(ctx))
	}
	srv, err := server.NewServer(server.ServerConfig{
		Service: svc, Store: st, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, name+".sock"), ServerNames: []string{"127.0.0.1"},
		Log: log, Hub: hub,
	})
	if err != nil {
		stop()
		return nil, err
	}
	r := &replica{st: st, svc: svc, srv: srv, stop: stop, done: make(chan struct{})}
	go func() { defer close(r.done); srv.Run(ctx) }()
	<-srv.Ready()
	return r, nil
}

// shutdown stops the server and waits for it.
func (r *replica) shutdown() {
	r.stop()
	<-r.done
}

// agents are conc connections, caller w on replica w mod len(replicas)
// (round robin per caller), each authenticated, as a renewing agent is,
// by the cluster's intermediate.
type agents struct {
	conns   []*grpc.ClientConn
	clients []meshrootv1.IssuerClient
}

// dialAgents issues the agents' intermediate through svc (key signs its
// CSR) and connects conc agents over the replicas.
func dialAgents(ctx context.Context, svc *ca.Service, key crypto.Signer, csr *x509.CertificateRequest, replicas []*replica, conc int) (*agents, error) {
	issued, err := svc.IssueIntermediate(ca.WithActor(ctx, "bench"), ca.IssueRequest{Cluster: "bench", CSR: csr})
	if err != nil {
		return nil, err
	}
	tb, err := svc.TrustBundle(ctx)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range tb.Roots {
		pool.AddCert(r)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: issued.Cert}
	for _, c := range issued.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	a := &agents{}
	for w := range conc {
		conn, err := grpc.NewClient(replicas[w%len(replicas)].srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert},
		})))
		if err != nil {
			a.close()
			return nil, err
		}
		a.conns = append(a.conns, conn)
		c := meshrootv1.NewIssuerClient(conn)
		a.clients = append(a.clients, c)
		// Connect before measuring, as long-running agents are.
		if _, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{}); err != nil {
			a.close()
			return nil, fmt.Errorf("agent %d: %w", w, err)
		}
	}
	return a, nil
}

// close closes every connection.
func (a *agents) close() {
	for _, c := range a.conns {
		c.Close()
	}
	a.conns = nil
}

// measureSign is the gRPC row: conc agents renew (SignIntermediate) for d.
func (a *agents) measureSign(ctx context.Context, name string, d time.Duration, csrDER []byte) result {
	return measure(name, len(a.clients), d, func(w int) error {
		_, err := a.clients[w].SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "bench", Csr: csrDER})
		return err
	})
}

// grpcRow is a gRPC row: its agents and what they measured.
type grpcRow struct {
	name   string
	agents *agents
	res    result
	// dbCPU, when set, reads the CPU the database server spent for the
	// row so far (see backendCPU).
	dbCPU func() (time.Duration, bool)
}

// measureRounds lets the rows take turns, rounds times d/rounds each; the
// CPU profile (-cpuprofile) covers the first turn of its row.
func measureRounds(ctx context.Context, rows []*grpcRow, d time.Duration, csrDER []byte) {
	turn := d / time.Duration(max(rounds, 1))
	for i := range max(rounds, 1) {
		for _, r := range rows {
			stop := func() {}
			if i == 0 {
				stop = startProfile(r.name)
			}
			var db0 time.Duration
			dbOK := r.dbCPU != nil
			if dbOK {
				db0, dbOK = r.dbCPU()
			}
			res := r.agents.measureSign(ctx, r.name, turn, csrDER)
			stop()
			if dbOK {
				db1, ok := r.dbCPU()
				res.db, res.dbKnown = max(db1-db0, 0), ok
			}
			r.res.add(res)
		}
	}
}
