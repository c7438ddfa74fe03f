package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// BenchIssuance measures the transaction of an intermediate's issuance
// (the reads that re-check its preconditions, supersede, status, insert,
// audit) on s, from 32 callers per CPU. It reports txn/s and the callers'
// p99-ms (each Update, queueing included); started, when set, is called as
// the measurement starts.
func BenchIssuance(b *testing.B, s store.Store, started func()) {
	ctx := b.Context()
	now := time.Now()
	const clusters = 64
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx, store.Root{ID: "r1", TrustDomain: "example.org", State: store.RootActive, KeyRef: "k", ChainPEM: []byte("c"), NotAfter: now.Add(time.Hour), CreatedAt: now}); err != nil {
			return err
		}
		for i := range clusters {
			if err := tx.CreateCluster(ctx, store.Cluster{Name: fmt.Sprint("c", i), TrustDomain: "example.org", CreatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var (
		serial atomic.Int64
		mu     sync.Mutex
		lat    []time.Duration
	)
	b.SetParallelism(32)
	if started != nil {
		started()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		defer func() {
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
		for pb.Next() {
			n := serial.Add(1)
			cluster := fmt.Sprint("c", n%clusters)
			t0 := time.Now()
			err := s.Update(ctx, func(tx store.Tx) error {
				if _, err := tx.GetRoot(ctx, "r1"); err != nil {
					return err
				}
				cl, err := tx.GetCluster(ctx, cluster)
				if err != nil {
					return err
				}
				if _, err := tx.SupersedeIntermediates(ctx, cluster, now); err != nil {
					return err
				}
				cl.Status.IntermediateSerial = fmt.Sprintf("%x", n)
				if err := tx.UpdateClusterStatus(ctx, cluster, cl.Status); err != nil {
					return err
				}
				if err := tx.CreateIntermediate(ctx, store.Intermediate{Serial: fmt.Sprintf("%x", n), Cluster: cluster, RootID: "r1",
					NotBefore: now, NotAfter: now.Add(time.Hour), Status: store.IntermediateActive, CertPEM: make([]byte, 700), CreatedAt: now}); err != nil {
					return err
				}
				_, err = tx.AppendAudit(ctx, store.AuditEntry{Actor: "cluster:" + cluster, Action: "intermediate.issue", Target: cluster, Result: "ok", Details: `{"serial":"x"}`})
				return err
			})
			mine = append(mine, time.Since(t0))
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}
