package ca_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// BenchmarkReportStatus is the store's part of a status report as the
// server handles one authenticated by the cluster's intermediate: the
// authentication's read (the intermediate's record with its cluster's
// registration: authn's AuthenticateReport), then Report with both. At each change of the fleet every cluster sends
// one; in bench-fleet they were half the server's CPU per change.
func BenchmarkReportStatus(b *testing.B) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st := newService(b)
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		b.Fatal(err)
	}
	const clusters = 64
	serials := make([]string, clusters)
	for i := range clusters {
		name := fmt.Sprintf("c%02d", i)
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		csr, _ := csrFor(b)
		out, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: name, CSR: csr})
		if err != nil {
			b.Fatal(err)
		}
		serials[i] = ca.SerialHex(out.Cert.SerialNumber)
	}
	var next atomic.Int64
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	b.SetParallelism(32) // reports arrive together: the writer commits them in groups
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % clusters
			name := fmt.Sprintf("c%02d", i)
			ri, err := st.GetRegisteredIntermediate(ctx, serials[i])
			if err != nil {
				b.Error(err)
				return
			}
			err = svc.Report(ctx, ca.StatusReport{
				Cluster: name, Registered: ri.Registration, BundleSequence: 1, IntermediateSerial: serials[i],
				Istiod:       store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: 1, Serial: serials[i], Since: time.Now()},
				AppliedCRLs:  map[string]uint64{"root": uint64(i)},
				Intermediate: &ri.Intermediate,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// The writer's group commits wait: the time per report is not its CPU.
	b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU is this process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
