package main

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
)

// Each in-process agent writes to its own in-memory kubeclient.Interface
// (internal/kubeclient/kubefake: resourceVersion checked on update; no
// API server): with 1,000 clusters one real
// kube-apiserver per cluster is out of reach on this machine, and the
// Secret write path against a real one is covered by test/kube. The
// wrapper below records, after every successful write of the cacerts
// Secret, what the Secret now holds and when: "applied" means written to
// the Secret, not received over the watch.
//
// It also stands in for istiod: after each cacerts write it copies
// root-cert.pem into istio-system/istio-ca-root-cert, as an istiod that
// reloads at once would publish it. The agents therefore confirm istiod
// "loaded" and the rotation runs under the default istiod gate.

// applied is one observed write of a cluster's cacerts Secret.
type applied struct {
	at       time.Time
	sequence uint64 // meshroot.io/bundle-sequence
	rootID   string // meshroot.io/root-id: the root of the intermediate
	roots    int    // certificates in root-cert.pem
}

// recorder keeps the writes of one cluster's Secret, and when its agent
// received each trust bundle over its watch (from the agent's log).
type recorder struct {
	mu       sync.Mutex
	events   []applied
	received []receipt
	notify   func() // called after every write (wakes the waiters)
	// fwd, in an agent shard, takes each write and receipt instead: the
	// bench keeps them, in the shard's member (shard.go).
	fwd func(shardEvent)
}

// receipt is one bundle message the agent logged as received.
type receipt struct {
	at       time.Time
	sequence uint64
}

func (r *recorder) receive(at time.Time, seq uint64) {
	if r.fwd != nil {
		r.fwd(shardEvent{Ev: "received", At: at.UnixNano(), Seq: seq})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, receipt{at, seq})
	if len(r.received) > 64 {
		r.received = append(r.received[:0:0], r.received[len(r.received)-32:]...)
	}
}

// firstReceived returns when the agent first received a bundle with at
// least sequence seq, at or after since.
func (r *recorder) firstReceived(since time.Time, seq uint64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.received {
		if !ev.at.Before(since) && ev.sequence >= seq {
			return ev.at, true
		}
	}
	return time.Time{}, false
}

func (r *recorder) add(s *kubeclient.Secret) {
	seq, _ := strconv.ParseUint(s.Annotations[ca.AnnotationBundleSequence], 10, 64)
	ev := applied{at: time.Now(), sequence: seq, rootID: s.Annotations[ca.AnnotationRootID], roots: pemCerts(s.Data["root-cert.pem"])}
	if r.fwd != nil {
		r.fwd(shardEvent{Ev: "applied", At: ev.at.UnixNano(), Seq: ev.sequence, Root: ev.rootID, Roots: ev.roots})
		return
	}
	r.put(ev)
}

// put keeps one write and wakes the waiters.
func (r *recorder) put(ev applied) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	if len(r.events) > 64 { // keep the tail; waiters look at recent writes
		r.events = append(r.events[:0:0], r.events[len(r.events)-32:]...)
	}
	r.mu.Unlock()
	r.notify()
}

// pemCerts counts the certificates of a PEM file by their BEGIN lines.
// The recorder runs in the agents' process after every write: it counts,
// not parses, so that the bench's own bookkeeping stays out of the
// agents' CPU per change. (The agent wrote the file from parsed roots.)
func pemCerts(data []byte) int {
	return bytes.Count(data, []byte("-----BEGIN CERTIFICATE-----"))
}

// first returns the time of the first write at or after since that
// satisfies pred.
func (r *recorder) first(since time.Time, pred func(applied) bool) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if !ev.at.Before(since) && pred(ev) {
			return ev.at, true
		}
	}
	return time.Time{}, false
}

// last is the latest write, if any.
func (r *recorder) last() (applied, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return applied{}, false
	}
	return r.events[len(r.events)-1], true
}

// newRecordingKube is one cluster's API in memory (kubefake: Secrets and
// ConfigMaps, no Deployments, so no istiod is rolled, and no tokens). Each
// write of the cacerts Secret is recorded, then played to istiod:
// root-cert.pem copied into istio-ca-root-cert. Unless copyData, a write
// keeps the agent's data slices (kubefake's ShareData): at 1,000 clusters
// the Secret is ~1 MB, and an API server's storing it is not the agent's
// work; in this process it was a quarter of the agents' CPU per change.
func newRecordingKube(rec *recorder, copyData bool) *kubefake.Clientset {
	k := kubefake.New("")
	k.ShareData = !copyData
	ref := agent.DefaultSecret
	k.OnSecretWrite = func(ctx context.Context, ns string, s *kubeclient.Secret) {
		if ns != ref.Namespace || s.Name != ref.Name {
			return
		}
		rec.add(s)
		_ = k.PutConfigMap(ctx, ns, agent.RootCertConfigMap, map[string]string{"root-cert.pem": string(s.Data["root-cert.pem"])})
	}
	return k
}
