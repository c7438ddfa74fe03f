package server_test

import (
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// BenchmarkFanOutAcrossReplicas measures how long a change committed on
// replica A (a federated bundle, as a federation watcher on the leader
// stores it) takes to reach replica B's bundle hub: "notify" follows the
// change feed (LISTEN/NOTIFY) and polls only every hour; "poll-2s" has no
// feed and polls every 2 s, the server's default (what every replica
// would do without the feed). One op is one change; ms/change and
// p99-ms/change are the latency from A's commit call to B's hub.
func BenchmarkFanOutAcrossReplicas(b *testing.B) {
	b.Run("notify", func(b *testing.B) { benchFanOut(b, time.Hour, true) })
	b.Run("poll-2s", func(b *testing.B) { benchFanOut(b, 2*time.Second, false) })
}

func benchFanOut(b *testing.B, poll time.Duration, follow bool) {
	dsn := pgtest.NewDatabase(b)
	keyDir := filepath.Join(b.TempDir(), "keys")
	svcA, stA := pgReplica(b, dsn, keyDir)
	svcB, stB := pgReplica(b, dsn, keyDir)
	ctx := ca.WithActor(b.Context(), "bench")
	if _, err := svcA.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		b.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("peer.example")
	var docs [2][]byte
	for i := range docs {
		doc, err := spiffebundle.FromX509Authorities(td, []*x509.Certificate{testca.New(b, "peer.example").Cert}).Marshal()
		if err != nil {
			b.Fatal(err)
		}
		docs[i] = doc
	}
	if err := stA.Update(ctx, func(tx store.Tx) error {
		return tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: "peer.example", URL: "https://peer.example/bundle",
			Profile: store.ProfileHTTPSWeb, CreatedAt: time.Now(), Bundle: docs[1], Sequence: 1})
	}); err != nil {
		b.Fatal(err)
	}
	hub, _ := startHub(b, svcB, stB, poll, follow)
	testca.WaitFor(b, 5*time.Second, "B's first bundle", func() bool {
		cur, ok, _ := hub.Current()
		return ok && len(cur.Federated) == 1
	})
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		_, _, changed := hub.Current()
		start := time.Now()
		if err := stA.Update(ctx, func(tx store.Tx) error {
			return tx.SetFederatedBundle(ctx, "peer.example", docs[i%2], uint64(i+2), time.Now())
		}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, nextChange(b, hub, changed, start, poll+5*time.Second))
	}
	b.StopTimer()
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(sum/time.Duration(len(lat))), "ms/change")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms/change")
}
