// Tests of meshroot's SPIFFE federation against real peers: a SPIRE server
// (v1.13.3) and go-spiffe's federation client. meshroot runs as the built
// binary; SPIRE is driven through its CLI.
//
// Needs: go, spire-server v1.13.3 (test/tools/build.sh spire builds and
// caches it; SPIRE_SERVER_BIN overrides), and the sqlite3 CLI to read the
// bundle meshroot holds for a peer until `meshroot federation status`
// shows it. Run: cd test/spire && go test -count=1 ./...
package spire_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var meshrootTrustDomain = spiffeid.RequireTrustDomainFromString(meshrootTD)

// TestSPIREFederatesWithMeshrootWeb: SPIRE fetches meshroot's bundle from
// meshroot's https_web endpoint (a certificate from a test CA that SPIRE
// trusts through SSL_CERT_FILE), and a root meshroot prepares reaches SPIRE
// on its next refresh.
func TestSPIREFederatesWithMeshrootWeb(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	cert, key := ca.serverCert(t, "meshroot-bundle-endpoint")
	mr := startMeshroot(t, meshrootOpts{profile: "https_web", certFile: cert, keyFile: key})
	sp := startSPIRE(t, spireOpts{
		endpointProfile: "https_spiffe",
		federatesWith:   []spireFederation{{td: meshrootTD, url: mr.endpointURL, profile: "https_web"}},
		sslCertFile:     ca.pemFile,
	})
	spireFollowsMeshroot(t, mr, sp, mr.endpointURL, federation.WithWebPKIRoots(ca.pool))
}

// TestSPIREFederatesWithMeshrootSPIFFE: the same through meshroot's
// https_spiffe endpoint, SPIRE bootstrapped with `spire-server bundle set`
// and authenticating the endpoint's SVID
// spiffe://meshroot.test/meshroot/bundle-endpoint.
func TestSPIREFederatesWithMeshrootSPIFFE(t *testing.T) {
	t.Parallel()
	mr := startMeshroot(t, meshrootOpts{profile: "https_spiffe"})
	sp := startSPIRE(t, spireOpts{
		endpointProfile: "https_spiffe",
		federatesWith: []spireFederation{{
			td: meshrootTD, url: mr.endpointURL, profile: "https_spiffe", endpointID: meshrootEndpointID,
		}},
	})
	// Without a bundle for meshroot.test SPIRE cannot authenticate the
	// endpoint, so a refresh must fail rather than trust blindly.
	if err := sp.refresh(meshrootTD); err == nil {
		t.Fatal("SPIRE refreshed an https_spiffe peer it holds no bundle for")
	} else if !strings.Contains(err.Error(), "local copy of bundle not found") {
		t.Fatalf("SPIRE's refresh without a bundle for meshroot.test failed for another reason: %v", err)
	}
	doc, _ := mr.localBundle()
	bootstrap := filepath.Join(t.TempDir(), "meshroot-bundle.json")
	writeFile(t, bootstrap, doc)
	sp.cli("bundle set", "-id", "spiffe://"+meshrootTD, "-format", "spiffe", "-path", bootstrap)

	local, err := spiffebundle.Parse(meshrootTrustDomain, doc)
	if err != nil {
		t.Fatal(err)
	}
	spireFollowsMeshroot(t, mr, sp, mr.endpointURL, federation.WithSPIFFEAuth(local, spiffeid.RequireFromString(meshrootEndpointID)))
}

// TestSPIREFederatesWithMeshrootRelay: SPIRE fetches meshroot's bundle from
// meshroot-bundle, the edge relay (https_web, a certificate from a test CA
// SPIRE trusts), which relays it from meshroot's https_spiffe endpoint,
// authenticated first with a bootstrap bundle and then with the bundle it
// holds; a root meshroot prepares reaches SPIRE through the relay. The
// relay refuses to start without a way to authenticate the upstream.
func TestSPIREFederatesWithMeshrootRelay(t *testing.T) {
	t.Parallel()
	mr := startMeshroot(t, meshrootOpts{profile: "https_spiffe"})
	doc, _ := mr.localBundle()
	bootstrap := filepath.Join(t.TempDir(), "bootstrap.json")
	writeFile(t, bootstrap, doc)
	ca := newTestCA(t)
	cert, key := ca.serverCert(t, "meshroot-bundle-relay")
	base := []string{"--trust-domain", meshrootTD, "--upstream", mr.endpointURL + "/", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0", "--poll", "1s"}

	if out, err := run(context.Background(), relayBin, append(base, "--upstream-id", meshrootEndpointID)...); err == nil || !strings.Contains(err.Error(), "exit status 2") || !strings.Contains(err.Error(), "--upstream-bundle") {
		t.Fatalf("meshroot-bundle with an https_spiffe upstream and nothing to authenticate it: %v %s", err, out)
	}

	relay := startRelay(t, append(base, "--upstream-bundle", bootstrap, "--cache-file", filepath.Join(t.TempDir(), "bundle.json"))...)
	sp := startSPIRE(t, spireOpts{
		endpointProfile: "https_spiffe",
		federatesWith:   []spireFederation{{td: meshrootTD, url: relay.url, profile: "https_web"}},
		sslCertFile:     ca.pemFile,
	})
	spireFollowsMeshroot(t, mr, sp, relay.url, federation.WithWebPKIRoots(ca.pool))
	if !strings.Contains(relay.logs(), `"msg":"bundle relay: serving a new bundle"`) {
		t.Errorf("the relay did not log the bundles it took:\n%s", relay.logs())
	}
}

// spireFollowsMeshroot checks that SPIRE, federated with mr, holds exactly
// meshroot's roots with meshroot's refresh hint after a forced refresh, and
// that a root added by `meshroot root prepare` reaches SPIRE on its next
// refresh. url is the endpoint SPIRE fetches from (meshroot's, or a relay
// of it) and auth authenticates it for go-spiffe.
func spireFollowsMeshroot(t *testing.T, mr *meshrootServer, sp *spireServer, url string, auth federation.FetchOption) {
	t.Helper()
	roots := mr.roots()
	if len(roots) != 1 {
		t.Fatalf("meshroot's bundle holds %d roots after root init, want 1", len(roots))
	}
	eventually(t, 20*time.Second, "SPIRE fetches meshroot's bundle", func() error {
		if err := sp.refresh(meshrootTD); err != nil {
			return err
		}
		held, _, err := sp.federatedBundle(meshrootTD)
		if err != nil {
			return err
		}
		return sameCerts(held.X509Authorities(), roots)
	})
	held, raw, err := sp.federatedBundle(meshrootTD)
	if err != nil {
		t.Fatal(err)
	}
	// The refresh hint is the one meshroot serves (2 s), which also shows
	// the bundle came from the endpoint and not from a bootstrap document.
	if h, ok := held.RefreshHint(); !ok || h != refreshHint {
		t.Errorf("SPIRE holds meshroot's bundle with refresh hint %v (set: %v), want %v:\n%s", h, ok, refreshHint, raw)
	}

	t.Run("RootChangeReachesSPIRE", func(t *testing.T) {
		_, seqBefore := mr.localBundle()
		mr.cli("root", "prepare")
		_, seq := mr.localBundle()
		if seq != seqBefore+1 {
			t.Errorf("root prepare: bundle sequence %d -> %d, want +1", seqBefore, seq)
		}
		both := mr.roots()
		if len(both) != 2 || !slices.ContainsFunc(both, roots[0].Equal) {
			t.Fatalf("meshroot's bundle after root prepare: %d roots, want the old one and a new one", len(both))
		}
		// The endpoint SPIRE fetches from serves the new bundle (go-spiffe's
		// client).
		eventually(t, 10*time.Second, "the endpoint serves the prepared root", func() error {
			b, err := federation.FetchBundle(context.Background(), meshrootTrustDomain, url, auth)
			if err != nil {
				return err
			}
			if s, _ := b.SequenceNumber(); s != seq {
				return fmt.Errorf("endpoint serves sequence %d, want %d", s, seq)
			}
			return sameCerts(b.X509Authorities(), both)
		})

		// SPIRE's next refresh (forced: left alone SPIRE polls every
		// max(hint, 60 s)/4) must carry the new root: one refresh, no retry.
		if err := sp.refresh(meshrootTD); err != nil {
			t.Fatalf("SPIRE's refresh after root prepare failed: %v", err)
		}
		held, raw, err := sp.federatedBundle(meshrootTD)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameCerts(held.X509Authorities(), both); err != nil {
			t.Fatalf("after SPIRE's next refresh, SPIRE does not hold meshroot's old and prepared roots: %v\n%s", err, raw)
		}
		// SPIRE's bundle decoder (bundleutil.Decode in v1.13.3) reads keys
		// and spiffe_refresh_hint only, so it stores sequence 0 whatever
		// meshroot serves. Accept that known limitation, nothing else.
		switch spireSeq, err := sp.federatedSequence(meshrootTD); {
		case err != nil:
			t.Error(err)
		case spireSeq == seq:
		case spireSeq == 0:
			t.Logf("SPIRE stored meshroot's bundle with sequence 0; meshroot served %d (SPIRE v1.13.3 drops spiffe_sequence)", seq)
		default:
			t.Errorf("SPIRE stored meshroot's bundle with sequence %d, meshroot served %d", spireSeq, seq)
		}
	})
}

// TestMeshrootFederatesWithSPIRE: meshroot's federation watcher fetches
// SPIRE's bundle, in both of SPIRE's bundle endpoint profiles, and follows
// a new SPIRE X.509 authority and its sequence.
func TestMeshrootFederatesWithSPIRE(t *testing.T) {
	t.Parallel()
	t.Run("https_spiffe", func(t *testing.T) {
		t.Parallel()
		sp := startSPIRE(t, spireOpts{endpointProfile: "https_spiffe"})
		mr := startMeshroot(t, meshrootOpts{profile: "https_spiffe"})
		doc, own := sp.ownBundle()
		bootstrap := filepath.Join(t.TempDir(), "spire-bundle.json")
		writeFile(t, bootstrap, doc)
		requested := time.Now()
		mr.cli("federation", "add", spireTD, "--url", sp.endpointURL, "--profile", "https_spiffe",
			"--endpoint-spiffe-id", spireEndpointID, "--bootstrap-bundle", bootstrap, "-o", "json")
		meshrootHoldsSPIRE(t, mr, own, requested)

		// SPIRE prepares its next X.509 authority: the bundle grows and its
		// sequence goes up; meshroot's next fetch (forced) follows.
		sp.cli("localauthority x509 prepare")
		_, own2 := sp.ownBundle()
		s1, _ := own.SequenceNumber()
		s2, _ := own2.SequenceNumber()
		if len(own2.X509Authorities()) != len(own.X509Authorities())+1 || s2 <= s1 {
			t.Fatalf("SPIRE after localauthority x509 prepare: %d authorities, sequence %d -> %d", len(own2.X509Authorities()), s1, s2)
		}
		requested = time.Now()
		mr.cli("federation", "refresh", spireTD)
		meshrootHoldsSPIRE(t, mr, own2, requested)
		if err := mr.metric(fmt.Sprintf("meshroot_federation_bundle_sequence{trust_domain=%q}", spireTD), float64(s2)); err != nil {
			t.Error(err)
		}
	})
	t.Run("https_web", func(t *testing.T) {
		t.Parallel()
		ca := newTestCA(t)
		cert, key := ca.serverCert(t, "spire-bundle-endpoint")
		sp := startSPIRE(t, spireOpts{endpointProfile: "https_web", certFile: cert, keyFile: key})
		mr := startMeshroot(t, meshrootOpts{profile: "https_spiffe", caFile: ca.pemFile})
		_, own := sp.ownBundle()
		requested := time.Now()
		mr.cli("federation", "add", spireTD, "--url", sp.endpointURL, "--profile", "https_web", "-o", "json")
		meshrootHoldsSPIRE(t, mr, own, requested)

		// The same endpoint registered for another trust domain: SPIRE's CA
		// carries spiffe://spire.test, so meshroot must refuse the bundle.
		mr.cli("federation", "add", "other.test", "--url", sp.endpointURL, "--profile", "https_web", "-o", "json")
		eventually(t, 15*time.Second, "meshroot refuses SPIRE's bundle for other.test", func() error {
			p, err := mr.peer("other.test")
			switch {
			case err != nil:
				return err
			case p.LastError == "":
				return errNotYet
			case p.HasBundle:
				t.Fatalf("meshroot stored spire.test's bundle as other.test's: %+v", p)
			case !strings.HasPrefix(p.LastError, "wrong_trust_domain:"):
				t.Fatalf("meshroot refused other.test's bundle for another reason: %s", p.LastError)
			}
			return nil
		})
	})
}

// meshrootHoldsSPIRE waits until meshroot's watcher has fetched want (SPIRE's
// own bundle) without error, then checks the authorities it holds.
func meshrootHoldsSPIRE(t *testing.T, mr *meshrootServer, want *spiffebundle.Bundle, requested time.Time) {
	t.Helper()
	wantSeq, ok := want.SequenceNumber()
	if !ok {
		t.Fatal("SPIRE's bundle has no spiffe_sequence")
	}
	var last peerStatus
	eventually(t, 15*time.Second, "meshroot fetches SPIRE's bundle", func() error {
		p, err := mr.peer(spireTD)
		if err != nil {
			return err
		}
		last = p
		switch {
		case p.LastError != "":
			return fmt.Errorf("last_error: %s", p.LastError)
		case !p.HasBundle:
			return errNotYet
		case p.LastSuccess.IsZero():
			return fmt.Errorf("no successful fetch yet")
		case p.Sequence != wantSeq:
			return fmt.Errorf("holds sequence %d, SPIRE serves %d", p.Sequence, wantSeq)
		}
		return nil
	})
	t.Logf("meshroot holds SPIRE's bundle (sequence %d), fetched %s after the request", last.Sequence, last.LastSuccess.Sub(requested).Round(time.Millisecond))
	held := mr.heldBundle(spireTD)
	if err := sameCerts(held.X509Authorities(), want.X509Authorities()); err != nil {
		t.Errorf("meshroot's bundle for %s is not SPIRE's: %v", spireTD, err)
	}
	if s, _ := held.SequenceNumber(); s != wantSeq {
		t.Errorf("meshroot's bundle for %s has sequence %d, SPIRE serves %d", spireTD, s, wantSeq)
	}
}

// TestGoSPIFFEFetchesMeshroot: go-spiffe's federation client fetches
// meshroot's bundle in both profiles and finds the roots, the sequence and
// the refresh hint; a wrong trust anchor or endpoint ID is refused.
func TestGoSPIFFEFetchesMeshroot(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, mr *meshrootServer, auth federation.FetchOption) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := federation.FetchBundle(ctx, meshrootTrustDomain, mr.endpointURL, auth)
		if err != nil {
			t.Fatalf("go-spiffe FetchBundle: %v", err)
		}
		if err := sameCerts(b.X509Authorities(), mr.roots()); err != nil {
			t.Error(err)
		}
		_, wantSeq := mr.localBundle()
		if seq, ok := b.SequenceNumber(); !ok || seq != wantSeq {
			t.Errorf("served spiffe_sequence %d (present: %v), want %d", seq, ok, wantSeq)
		}
		if h, ok := b.RefreshHint(); !ok || h != refreshHint {
			t.Errorf("served spiffe_refresh_hint %v (present: %v), want %v", h, ok, refreshHint)
		}
	}
	refused := func(t *testing.T, mr *meshrootServer, what string, auth federation.FetchOption) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := federation.FetchBundle(ctx, meshrootTrustDomain, mr.endpointURL, auth); err == nil {
			t.Errorf("go-spiffe fetched meshroot's bundle with %s", what)
		}
	}
	t.Run("https_web", func(t *testing.T) {
		t.Parallel()
		ca := newTestCA(t)
		cert, key := ca.serverCert(t, "meshroot-bundle-endpoint")
		mr := startMeshroot(t, meshrootOpts{profile: "https_web", certFile: cert, keyFile: key})
		check(t, mr, federation.WithWebPKIRoots(ca.pool))
		refused(t, mr, "another CA", federation.WithWebPKIRoots(newTestCA(t).pool))
	})
	t.Run("https_spiffe", func(t *testing.T) {
		t.Parallel()
		mr := startMeshroot(t, meshrootOpts{profile: "https_spiffe"})
		doc, _ := mr.localBundle()
		local, err := spiffebundle.Parse(meshrootTrustDomain, doc)
		if err != nil {
			t.Fatal(err)
		}
		check(t, mr, federation.WithSPIFFEAuth(local, spiffeid.RequireFromString(meshrootEndpointID)))
		refused(t, mr, "another endpoint ID", federation.WithSPIFFEAuth(local, spiffeid.RequireFromString("spiffe://meshroot.test/spire/server")))
		other := spiffebundle.FromX509Authorities(meshrootTrustDomain, []*x509.Certificate{newTestCA(t).cert})
		refused(t, mr, "a bundle without meshroot's root", federation.WithSPIFFEAuth(other, spiffeid.RequireFromString(meshrootEndpointID)))
	})
}
