package kubeenv

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Main runs a test binary's tests (call it from TestMain:
// os.Exit(kubeenv.Main(m))) with clusters reused between its tests, and
// stops the clusters left idle after the last one.
//
// A cluster costs several seconds and about 2 CPU-seconds to start, and
// most tests start one or two. Under Main, when a test that started a
// cluster without options ends and passed, the cluster's etcd is put back
// to the content it had when the apiserver was first ready (objects the
// test created are deleted, objects it changed or deleted are restored,
// the apiserver's own leases are left alone), and the next Start without
// options gets it: a new Cluster value on the same address, issuer,
// serving certificate and signing keys. ServiceAccounts are new objects
// with new UIDs, so the earlier test's tokens are refused (once the
// apiserver's 10 s cache of token reviews lets go of them).
//
// A cluster is not reused after its test failed (its log tail is printed
// and it stops, as without Main), after StopAPIServer, or when the reset
// fails.
func Main(m *testing.M) int {
	reuse.Store(true)
	code := m.Run()
	reuse.Store(false)
	idle.stopAll()
	return code
}

var (
	reuse atomic.Bool
	idle  idlePool
)

// idlePool holds reset clusters waiting for a test.
type idlePool struct {
	mu  sync.Mutex
	cps []*controlPlane
}

func (p *idlePool) take() *controlPlane {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cps) == 0 {
		return nil
	}
	cp := p.cps[len(p.cps)-1]
	p.cps = p.cps[:len(p.cps)-1]
	return cp
}

func (p *idlePool) put(cp *controlPlane) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cps = append(p.cps, cp)
}

func (p *idlePool) stopAll() {
	for cp := p.take(); cp != nil; cp = p.take() {
		cp.stop(silentTB{})
	}
}

// silentTB reports the stops after the last test to stderr.
type silentTB struct{ testing.TB }

func (silentTB) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (silentTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// release ends the test's lease: the cluster is reset and kept for the
// next test when it can be, else stopped.
func (c *Cluster) release(t testing.TB) {
	c.mu.Lock()
	restarted := c.restarted || c.stopped
	c.mu.Unlock()
	switch {
	case t.Failed():
		if tail := c.logTail(60); tail != "" {
			t.Logf("kubeenv: cluster %q apiserver log (last lines):\n%s", c.Name, tail)
		}
	case c.snap == nil || restarted || !reuse.Load():
	default:
		ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
		defer cancel()
		err := c.reset(ctx)
		if err == nil {
			idle.put(c.controlPlane)
			return
		}
		t.Logf("kubeenv: cluster %q not reused: %v", c.Name, err)
	}
	c.stop(t)
}

const resetTimeout = 30 * time.Second

// takeSnapshot records etcd's content, to reset the cluster to it later.
func (c *Cluster) takeSnapshot() error {
	ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
	defer cancel()
	kvs, err := c.etcd().rangeAll(ctx)
	if err != nil {
		return err
	}
	c.snap = &etcdSnapshot{kvs: kvs}
	return nil
}

// etcdSnapshot is etcd's content at one time: value by key.
type etcdSnapshot struct {
	kvs map[string][]byte
}

// keptAsIs are the key prefixes the apiserver itself keeps writing (its
// identity lease, the master leases): a reset leaves them alone.
var keptAsIs = []string{
	"/registry/leases/kube-system/",
	"/registry/masterleases/",
}

func keptKey(k string) bool {
	for _, p := range keptAsIs {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// reset puts etcd back to the snapshot in one transaction per batch, then
// waits until the apiserver serves the snapshot's namespaces and
// ClusterRoleBindings (its caches and authorizer follow etcd's watch).
func (c *Cluster) reset(ctx context.Context) error {
	e := c.etcd()
	cur, err := e.rangeAll(ctx)
	if err != nil {
		return err
	}
	var ops []etcdOp
	for k, v := range cur {
		if keptKey(k) {
			continue
		}
		old, ok := c.snap.kvs[k]
		switch {
		case !ok:
			ops = append(ops, etcdOp{key: k, delete: true})
		case string(old) != string(v):
			ops = append(ops, etcdOp{key: k, value: old})
		}
	}
	for k, old := range c.snap.kvs {
		if _, ok := cur[k]; !ok && !keptKey(k) {
			ops = append(ops, etcdOp{key: k, value: old})
		}
	}
	if err := e.apply(ctx, ops); err != nil {
		return err
	}
	return c.waitServes(ctx)
}

// waitServes waits until the apiserver lists exactly the snapshot's
// namespaces and ClusterRoleBindings.
func (c *Cluster) waitServes(ctx context.Context) error {
	wantNS := c.snap.names("/registry/namespaces/")
	wantCRB := c.snap.names("/registry/clusterrolebindings/")
	var last string
	for {
		nss, err1 := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		crbs, err2 := c.Client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
		if err1 == nil && err2 == nil {
			var gotNS, gotCRB []string
			for _, n := range nss.Items {
				gotNS = append(gotNS, n.Name)
			}
			for _, b := range crbs.Items {
				gotCRB = append(gotCRB, b.Name)
			}
			slices.Sort(gotNS)
			slices.Sort(gotCRB)
			if slices.Equal(gotNS, wantNS) && slices.Equal(gotCRB, wantCRB) {
				return nil
			}
			last = fmt.Sprintf("namespaces %v (want %v), %d ClusterRoleBindings (want %d)", gotNS, wantNS, len(gotCRB), len(wantCRB))
		} else {
			last = fmt.Sprint(err1, err2)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the apiserver did not serve the reset content: %s", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// names returns the sorted last path elements of the keys under prefix.
func (s *etcdSnapshot) names(prefix string) []string {
	var out []string
	for k := range s.kvs {
		if rest, ok := strings.CutPrefix(k, prefix); ok && !strings.Contains(rest, "/") {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

func (c *Cluster) etcd() etcdClient {
	return etcdClient{base: c.env.ControlPlane.Etcd.URL.String()}
}
