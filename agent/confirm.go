package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// The closed loop: after writing cacerts the agent checks what istiod
// actually serves, not what the Secret says. istiod publishes the roots it
// loaded in the istio-ca-root-cert ConfigMap of its own namespace; when
// that root set equals the Secret's, istiod is "loaded"; while it differs
// it is "pending", and after IstiodStaleAfter "stale" (reported, counted
// in meshroot_agent_istiod_state, and with --restart-istiod auto istiod is
// rolled once and checked again).

const (
	// RootCertConfigMap is the ConfigMap istiod writes the roots it serves
	// into (key root-cert.pem), in every namespace including its own.
	RootCertConfigMap = "istio-ca-root-cert"
	// DefaultIstiodStaleAfter is how long istiod may take to serve a new
	// cacerts before the agent reports it stale.
	DefaultIstiodStaleAfter = 2 * time.Minute
	// istiodRecheck is how soon the agent looks again while istiod has not
	// caught up (pending or stale), and while it cannot tell (no istiod,
	// no access, no roots published yet) within IstiodStaleAfter of a new
	// cacerts: an istiod starting beside a first cacerts publishes its
	// roots seconds later, and rotation gates wait for the report.
	// unconfirmedRecheck applies after that: rarely, for what is not going
	// to change by itself soon.
	istiodRecheck      = 2 * time.Second
	unconfirmedRecheck = 30 * time.Second
	// maxRootCertConfigMap bounds the root-cert.pem the agent parses.
	maxRootCertConfigMap = 1 << 20
)

// IstiodStates lists the states of meshroot_agent_istiod_state.
var IstiodStates = []string{store.IstiodLoaded, store.IstiodPending, store.IstiodStale, store.IstiodUnconfirmed}

// confirmState follows one Secret content until istiod serves it.
type confirmState struct {
	mu         sync.Mutex
	key        string    // the Secret content being confirmed
	changedAt  time.Time // when the agent first saw that content
	restarted  bool      // istiod was rolled for that content
	st         store.IstiodStatus
	lastLoaded store.IstiodStatus
	// published and publishedIDs are the last root-cert.pem read from
	// istiod's ConfigMap and the IDs of its roots: a fleet change makes
	// every agent report, and each report reads the ConfigMap, which
	// changes far less often than that.
	published    string
	publishedIDs []string
}

// confirmIstiod compares what istiod serves with the Secret cur and
// returns the state to report. It never fails: what it cannot read makes
// the state unconfirmed, with the reason in Detail.
func (a *Agent) confirmIstiod(ctx context.Context, cur *Current, now time.Time) store.IstiodStatus {
	if cur == nil || cur.CACerts == nil {
		return store.IstiodStatus{}
	}
	c := &a.istiodConf
	c.mu.Lock()
	defer c.mu.Unlock()
	want := rootIDs(cur.CACerts.Roots)
	seq, serial := appliedSequence(cur), ca.SerialHex(cur.CACerts.Cert.SerialNumber)
	if key := fmt.Sprintf("%d/%s/%s", seq, serial, strings.Join(want, ",")); key != c.key {
		c.key, c.changedAt, c.restarted = key, now, false
	}
	st := store.IstiodStatus{BundleSequence: c.lastLoaded.BundleSequence, Serial: c.lastLoaded.Serial}
	seen, err := a.istiodRoots(ctx, c)
	switch {
	case err != nil:
		st.State, st.Detail = store.IstiodUnconfirmed, err.Error()
	case slices.Equal(seen, want) && a.cfg.Probe.Addr != "":
		st = a.probed(ctx, cur, c, st, seen, seq, serial, now)
	case slices.Equal(seen, want):
		st = store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: seq, Serial: serial, Roots: seen,
			Detail: fmt.Sprintf("%s/%s holds the %d root(s) of the Secret", a.cfg.Secret.Namespace, RootCertConfigMap, len(seen))}
		c.lastLoaded = st
	default:
		st.State, st.Roots = store.IstiodPending, seen
		st.Detail = fmt.Sprintf("istiod publishes roots [%s], the Secret holds [%s]", shortIDs(seen), shortIDs(want))
		if stale := c.changedAt.Add(a.staleAfter()); !now.Before(stale) {
			st.State, st.StaleSince = store.IstiodStale, stale
			st.Detail += a.rollStale(ctx, c, now)
		}
	}
	if st.State == c.st.State && c.st.BundleSequence == st.BundleSequence && c.st.Serial == st.Serial && !c.st.Since.IsZero() {
		st.Since = c.st.Since
	} else {
		st.Since = now
		if st.State != store.IstiodLoaded {
			st.Since = c.changedAt
		}
		a.log.Info("istiod confirmation", "state", st.State, "detail", st.Detail)
	}
	c.st = st
	a.cfg.Metrics.istiodState(st)
	return st
}

// probed completes a roots match with the probe CSR: loaded only when
// istiod signs with the Secret's intermediate.
func (a *Agent) probed(ctx context.Context, cur *Current, c *confirmState, st store.IstiodStatus, seen []string, seq uint64, serial string, now time.Time) store.IstiodStatus {
	got, err := a.probeIstiod(ctx, cur)
	if err == nil && got == serial {
		st = store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: seq, Serial: serial, Roots: seen, Probed: true,
			Detail: fmt.Sprintf("istiod publishes the Secret's %d root(s) and signs with intermediate %s", len(seen), serial)}
		c.lastLoaded = st
		return st
	}
	st.State, st.Roots, st.Probed = store.IstiodPending, seen, true
	if err != nil {
		st.Detail = err.Error()
	} else {
		st.Detail = fmt.Sprintf("istiod signs with intermediate %s, the Secret holds %s", got, serial)
	}
	if stale := c.changedAt.Add(a.staleAfter()); !now.Before(stale) {
		st.State, st.StaleSince = store.IstiodStale, stale
		st.Detail += a.rollStale(ctx, c, now)
	}
	return st
}

// rollStale rolls istiod once per Secret content when it is stale and
// --restart-istiod is auto, and says what it did.
func (a *Agent) rollStale(ctx context.Context, c *confirmState, now time.Time) string {
	if a.cfg.Restart != RestartAuto || c.restarted {
		if c.restarted {
			return "; istiod was rolled once already"
		}
		return ""
	}
	c.restarted = true
	d := istiod{kube: a.cfg.Kube, namespace: a.cfg.Secret.Namespace, name: a.cfg.IstiodDeployment}
	if err := d.restart(ctx, now); err != nil {
		a.log.Warn("istiod is stale and could not be rolled", "error", err)
		return fmt.Sprintf("; rolling it failed: %v", err)
	}
	a.log.Warn("istiod still serves other roots than the Secret; rolled it", "deployment", a.cfg.IstiodDeployment)
	return "; rolled Deployment " + a.cfg.IstiodDeployment
}

// istiodRoots reads the IDs of the roots istiod publishes, sorted. The
// certificates are parsed again only when root-cert.pem differs from the
// one c remembers (c.mu held).
func (a *Agent) istiodRoots(ctx context.Context, c *confirmState) ([]string, error) {
	ns := a.cfg.Secret.Namespace
	cm, err := a.cfg.Kube.ConfigMaps(ns).Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no ConfigMap %s/%s: istiod has not published roots (is it running in %s?)", ns, RootCertConfigMap, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("read ConfigMap %s/%s: %v", ns, RootCertConfigMap, err)
	}
	data := cm.Data["root-cert.pem"]
	if len(data) > maxRootCertConfigMap {
		return nil, fmt.Errorf("ConfigMap %s/%s root-cert.pem is larger than %d bytes", ns, RootCertConfigMap, maxRootCertConfigMap)
	}
	if c.publishedIDs != nil && data == c.published {
		return c.publishedIDs, nil
	}
	var certs []*x509.Certificate
	rest := []byte(data)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c := a.roots.known(b.Bytes)
		if c == nil {
			var err error
			if c, err = x509.ParseCertificate(b.Bytes); err != nil {
				return nil, fmt.Errorf("ConfigMap %s/%s root-cert.pem: %v", ns, RootCertConfigMap, err)
			}
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("ConfigMap %s/%s holds no root-cert.pem certificates", ns, RootCertConfigMap)
	}
	c.published, c.publishedIDs = data, rootIDs(certs)
	return c.publishedIDs, nil
}

func (a *Agent) staleAfter() time.Duration {
	if a.cfg.IstiodStaleAfter > 0 {
		return a.cfg.IstiodStaleAfter
	}
	return DefaultIstiodStaleAfter
}

// istiodNext brings next forward while istiod has not confirmed, so that
// the agent checks again soon.
func (a *Agent) istiodNext(next, now time.Time) time.Time {
	a.istiodConf.mu.Lock()
	defer a.istiodConf.mu.Unlock()
	wait := istiodRecheck
	switch a.istiodConf.st.State {
	case store.IstiodLoaded, "":
		return next
	case store.IstiodUnconfirmed:
		if !now.Before(a.istiodConf.changedAt.Add(a.staleAfter())) {
			wait = unconfirmedRecheck
		}
	}
	if retry := now.Add(wait); retry.Before(next) {
		return retry
	}
	return next
}

// IstiodStatus is what the agent last saw istiod serve.
func (a *Agent) IstiodStatus() store.IstiodStatus {
	a.istiodConf.mu.Lock()
	defer a.istiodConf.mu.Unlock()
	return a.istiodConf.st
}

// rootIDs are the sorted, de-duplicated IDs of certs.
func rootIDs(certs []*x509.Certificate) []string {
	ids := make([]string, 0, len(certs))
	for _, c := range certs {
		ids = append(ids, ca.RootID(c))
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func shortIDs(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id[:min(len(id), 12)]
	}
	return strings.Join(out, " ")
}
