package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"testing"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// BenchmarkPlanCRLFileFleet times one agent planning ca-crl.pem for a
// fleet of N clusters (a root and N cluster intermediates, each with its
// CRL), with the agent's CRL cache warm as it is after the first
// reconcile: the work each agent does on every bundle change.
func BenchmarkPlanCRLFileFleet(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			f := newBenchFleet(b, n, false)
			var cache crlCache
			cas := crlCAs(f.cas) // as the agent's certCache keeps them
			set := &meshrootv1.CRLSet{Crls: f.crls}
			if p := planCRLFile(&cache, cas, cache.setEntries(set), f.now); len(p.Missing) != 0 {
				b.Fatalf("missing %v", p.Missing)
			}
			b.ResetTimer()
			for b.Loop() {
				planCRLFile(&cache, cas, cache.setEntries(set), f.now)
			}
		})
	}
}

// BenchmarkPlanCRLFileFleetCoLocated is BenchmarkPlanCRLFileFleet for
// many agents in one process, as bench-fleet runs them: each agent plans
// over its own cache (its own parsed entries and CAs), in turn, so the
// entries a plan walks are mostly not in the CPU's caches (64 agents of a
// 1,000-cluster fleet hold some 100 MB). One op is one agent's plan.
func BenchmarkPlanCRLFileFleetCoLocated(b *testing.B) {
	const agents = 64
	f := newBenchFleet(b, 1000, false)
	set := &meshrootv1.CRLSet{Crls: f.crls}
	caches := make([]crlCache, agents)
	cas := make([][]*crlCA, agents)
	for i := range caches {
		cas[i] = crlCAs(f.cas)
		if p := planCRLFile(&caches[i], cas[i], caches[i].setEntries(set), f.now); len(p.Missing) != 0 {
			b.Fatalf("missing %v", p.Missing)
		}
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		planCRLFile(&caches[i], cas[i], caches[i].setEntries(set), f.now)
		i = (i + 1) % agents
	}
}

// BenchmarkPlanCRLFileNewAgent times an agent with a new CRL cache (a
// `--once` run, a restart) planning ca-crl.pem for a fleet of N clusters
// after a root rotation: each cluster has its old and its new
// intermediate, which share a subject name, each with a CRL. Every CRL is
// parsed and matched with its CA; a CRL that names another key than a CA
// of its name is not verified against it (crlCache.checkEntry).
func BenchmarkPlanCRLFileNewAgent(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d/rotated", n), func(b *testing.B) {
			f := newBenchFleet(b, n, true)
			set := &meshrootv1.CRLSet{Crls: f.crls}
			for b.Loop() {
				var cache crlCache
				if p := planCRLFile(&cache, crlCAs(f.cas), cache.setEntries(set), f.now); len(p.Missing) != 0 {
					b.Fatalf("missing %v", p.Missing)
				}
			}
		})
	}
}

// BenchmarkCRLWorkPerChangeFleet times what an agent does with ca-crl.pem
// at every change of a fleet of N clusters once the file is written:
// planning it again over the fleet's set and the file (as reconcileCRL
// does), looking for its own CRL in the file, and reading which root CRLs
// the file enforces (as the status report does). The caches are warm, as
// after the first reconcile.
//
// "rotated" is the fleet after a root rotation: each cluster has its old
// and its new intermediate, which share a subject name, each with a CRL.
func BenchmarkCRLWorkPerChangeFleet(b *testing.B) {
	for _, tc := range []struct {
		n       int
		rotated bool
	}{{100, false}, {1000, false}, {1000, true}} {
		name := fmt.Sprintf("clusters=%d", tc.n)
		if tc.rotated {
			name += "/rotated"
		}
		b.Run(name, func(b *testing.B) {
			f := newBenchFleet(b, tc.n, tc.rotated)
			var cache crlCache
			cas := crlCAs(f.cas) // as the agent's certCache keeps them
			set := &meshrootv1.CRLSet{Crls: f.crls}
			held := planCRLFile(&cache, cas, cache.setEntries(set), f.now).PEM
			held = append([]byte(nil), held...)
			roots := f.cas[:1]
			own := &ca.CACerts{Cert: f.cas[len(f.cas)-1]}
			work := func() {
				file := append([]byte(nil), held...) // each read of the Secret is a new copy
				if p := planPublishedCRLFile(&cache, cas, cache.setEntries(set), file, f.now); len(p.Missing) != 0 {
					b.Fatalf("missing %v", p.Missing)
				}
				if ownCurrent(&cache, own, f.now, cache.fileEntries(file)) == nil {
					b.Fatal("the cluster's own CRL is not in the file")
				}
				if got := appliedRootCRLs(&cache, file, roots); len(got) != 1 {
					b.Fatalf("applied root CRLs %v", got)
				}
			}
			work()
			b.ResetTimer()
			for b.Loop() {
				work()
			}
		})
	}
}

// BenchmarkCRLChangeFleet times an agent's ca-crl.pem work at a root
// prepare in a fleet of N clusters, as in bench-fleet's fan-out: the set
// gains a new root and its CRL, and the agent plans the file over the new
// set and the file it holds, writes the plan, and reads the Secret back
// for its report (its own CRL, which root CRLs the file enforces). Each
// iteration starts, with the timer stopped, from the same held file, as
// the agent's last plan made it and last read (its report after the last
// change), and a root not seen before. The fleet's intermediates are kept as the
// agent's certCache keeps them; the new root is read anew, as the agent
// reads the bundle's roots. read=copy: the held file is a new copy, as a
// read from an API server is; read=written: it is the file the agent
// wrote last, as the Secret it knows holds it (the agent's case after its
// own writes, and bench-fleet's).
func BenchmarkCRLChangeFleet(b *testing.B) {
	for _, tc := range []struct {
		n       int
		written bool
	}{{100, false}, {1000, false}, {1000, true}} {
		name := fmt.Sprintf("clusters=%d/read=copy", tc.n)
		if tc.written {
			name = fmt.Sprintf("clusters=%d/read=written", tc.n)
		}
		n := tc.n
		b.Run(name, func(b *testing.B) {
			f := newBenchFleet(b, n, false)
			var cache crlCache
			cas := crlCAs(f.cas)
			held := append([]byte(nil), planCRLFile(&cache, cas, cache.entries(f.crls), f.now).PEM...)
			own := &ca.CACerts{Cert: f.cas[len(f.cas)-1]}
			base := &meshrootv1.CRLSet{Crls: f.crls}
			change := func(next benchFleet, file []byte) {
				set := append(append([]*crlCA{}, cas...), crlCAs(next.cas)...)
				msg := &meshrootv1.CRLSet{Crls: append(append([][]byte{}, f.crls...), next.crls...)} // the change's message
				p := planPublishedCRLFile(&cache, set, cache.setEntries(msg), file, f.now)
				if len(p.Missing) != 0 {
					b.Fatalf("missing %v", p.Missing)
				}
				file = p.PEM // written, and known as written
				if !tc.written {
					file = append([]byte(nil), p.PEM...) // written, then read back: a new copy
				}
				if ownCurrent(&cache, own, f.now, cache.fileEntries(file)) == nil {
					b.Fatal("the cluster's own CRL is not in the file")
				}
				if got := appliedRootCRLs(&cache, file, []*x509.Certificate{f.cas[0], next.cas[0]}); len(got) != 2 {
					b.Fatalf("applied root CRLs %v", got)
				}
			}
			prepare := func() (benchFleet, []byte) {
				next := newBenchFleet(b, 0, false) // the prepared root
				// The agent's last plan, over the set before the change,
				// made the file it holds (and is its memo's last).
				p := planPublishedCRLFile(&cache, cas, cache.setEntries(base), append([]byte(nil), held...), f.now)
				file := append([]byte(nil), p.PEM...)
				if tc.written {
					// As the agent's write left it: that plan's file was
					// made by joinFile (this one may be held, unchanged).
					file = cache.joinFile([][]byte{p.PEM})
				}
				cache.pemCRLs(file) // the agent's last reading of its Secret
				return next, file
			}
			change(prepare())
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				next, file := prepare()
				b.StartTimer()
				change(next, file)
			}
		})
	}
}

// benchFleet is a root and N cluster intermediates (2N when rotated: two
// per cluster with the same name), each with its CRL.
type benchFleet struct {
	now  time.Time
	cas  []*x509.Certificate
	keys []*ecdsa.PrivateKey // of cas
	crls [][]byte
}

func newBenchFleet(b *testing.B, n int, rotated bool) benchFleet {
	now := time.Now()
	mk := func(cn string, parent *x509.Certificate, pk *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"example.org"}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		if parent == nil {
			parent, pk = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), pk)
		if err != nil {
			b.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k
	}
	crl := func(c *x509.Certificate, k *ecdsa.PrivateKey) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(ca.CRLValidity)}, c, k) // as agents sign them
		if err != nil {
			b.Fatal(err)
		}
		return der
	}
	root, rk := mk("root", nil, nil)
	f := benchFleet{now: now, cas: []*x509.Certificate{root}, keys: []*ecdsa.PrivateKey{rk}, crls: [][]byte{crl(root, rk)}}
	for i := range n {
		c, k := mk(fmt.Sprintf("cluster-%d", i), root, rk)
		f.cas, f.keys = append(f.cas, c), append(f.keys, k)
		f.crls = append(f.crls, crl(c, k))
		if rotated {
			c, k := mk(fmt.Sprintf("cluster-%d", i), root, rk)
			f.cas, f.keys = append(f.cas, c), append(f.keys, k)
			f.crls = append(f.crls, crl(c, k))
		}
	}
	return f
}

// BenchmarkCRLFleetRenewals times an agent planning ca-crl.pem at each
// change of a 1,000-cluster fleet at rest: a cluster renews its CRL (the
// set loses the old one and gains the new, as a watch delta does), and
// the agent plans over the new set and the file it wrote at the last
// change. One op is one agent's change: the new set (its new CRL parsed
// and its signature checked beforehand, the same for both ways) and the
// plan. "from-last" plans from the last plan (crl_memo.go), "whole" plans
// whole as before it. With agents=64 the agents (their own caches, as in
// bench-fleet) take the changes in turn, so what a plan reads is mostly
// out of the CPU's caches.
func BenchmarkCRLFleetRenewals(b *testing.B) {
	f := newBenchFleet(b, 1000, false)
	for _, agents := range []int{1, 64} {
		for _, mode := range []string{"from-last", "whole"} {
			b.Run(fmt.Sprintf("agents=%d/%s", agents, mode), func(b *testing.B) {
				wholePlansOnly = mode == "whole"
				defer func() { wholePlansOnly = false }()
				// The changes, each a cluster's CRL renewed with the next number.
				n := b.N/agents + 1
				type change struct {
					cluster int
					der     []byte
				}
				changes := make([]change, n)
				numbers := make([]int64, len(f.cas))
				for i := range changes {
					k := 1 + (i*7919)%(len(f.cas)-1)
					numbers[k]++
					der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1 + numbers[k]), ThisUpdate: f.now, NextUpdate: f.now.Add(ca.CRLValidity)}, f.cas[k], f.keys[k])
					if err != nil {
						b.Fatal(err)
					}
					changes[i] = change{cluster: k, der: der}
				}
				type agent struct {
					cache  crlCache
					inters []*crlCA    // as certCache keeps them
					ents   []*crlEntry // the set, as the watch stream resolves it
					of     []int       // the cluster of each CRL of ents
					held   []byte      // the file written
					next   int         // the next change
					pre    []*crlEntry // the changes' CRLs, parsed and checked
				}
				as := make([]*agent, agents)
				for i := range as {
					a := &agent{inters: crlCAs(f.cas[1:])}
					a.ents = a.cache.entries(f.crls)
					for k := range f.crls {
						a.of = append(a.of, k)
					}
					p := planPublishedCRLFile(&a.cache, append(crlCAs(f.cas[:1]), a.inters...), a.ents, nil, f.now)
					if len(p.Missing) != 0 {
						b.Fatalf("missing %v", p.Missing)
					}
					a.held = p.PEM
					for _, ch := range changes[:n] {
						e, err := a.cache.parseEntry(ch.der)
						if err != nil {
							b.Fatal(err)
						}
						if err := a.cache.checkEntry(e, a.inters[ch.cluster-1]); err != nil {
							b.Fatal(err)
						}
						a.pre = append(a.pre, e)
					}
					as[i] = a
				}
				b.ResetTimer()
				for i := range b.N {
					a := as[i%agents]
					ch, e := changes[a.next], a.pre[a.next]
					a.next++
					ents := make([]*crlEntry, 0, len(a.ents))
					of := make([]int, 0, len(a.of))
					for j, x := range a.ents {
						if a.of[j] != ch.cluster {
							ents, of = append(ents, x), append(of, a.of[j])
						}
					}
					a.ents, a.of = append(ents, e), append(of, ch.cluster)
					cas := append(crlCAs(f.cas[:1]), a.inters...) // the roots read anew
					p := planPublishedCRLFile(&a.cache, cas, a.ents, a.held, f.now)
					if len(p.Missing) != 0 || len(p.PEM) == 0 {
						b.Fatalf("missing %v", p.Missing)
					}
					a.held = p.PEM
				}
				b.StopTimer()
				fromLast := 0
				for _, a := range as {
					fromLast += a.cache.memo.fromLast
				}
				b.ReportMetric(float64(fromLast)/float64(b.N), "from-last/op")
			})
		}
	}
}
