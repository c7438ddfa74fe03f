package ca_test

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

// BenchmarkIssueIntermediate measures the whole in-process issuance over a
// real SQLite store: cluster lookup, CSR parse and check, signing, the
// transaction (supersede, record, cluster status, audit row) and its commit.
func BenchmarkIssueIntermediate(b *testing.B) {
	ctx := context.Background()
	svc, _ := newService(b)
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east"}); err != nil {
		b.Fatal(err)
	}
	k, _ := keys.ECP256.Generate()
	der, _ := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, k)
	// Load the root key (PBKDF2 of the test passphrase) before
	// timing, and issue from 32 callers per CPU as a loaded server does:
	// with one per CPU the figure is the disk's flush latency, not the
	// work, since group commit has nothing to group.
	if _, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSRData: der}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSRData: der}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
