package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/internal/kubeclient/kubefake"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// The closed loop's decisions (confirm.go) with a fake Kubernetes API and
// a fake istiod CA service: what istio-ca-root-cert holds and which
// intermediate the probe CSR comes back signed with are set by the test,
// and the clock is the now passed to confirmIstiod.

var confirmSerial int64

// confirmCA makes a CA certificate under parent (self-signed when nil).
func confirmCA(t *testing.T, cn string, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	k, err := keys.ECP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	confirmSerial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1000 + confirmSerial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// fakeCAService answers CreateCertificate as istiod does: the leaf, then
// the intermediate it signs with (signedBy), as PEM strings.
type fakeCAService struct {
	mu       sync.Mutex
	signedBy *x509.Certificate
	calls    int
}

func (f *fakeCAService) set(c *x509.Certificate) { f.mu.Lock(); f.signedBy = c; f.mu.Unlock() }

func (f *fakeCAService) handle(_ any, stream grpc.ServerStream) error {
	var req []byte
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	f.mu.Lock()
	inter := f.signedBy
	f.calls++
	f.mu.Unlock()
	var resp []byte
	for _, c := range []*x509.Certificate{inter, inter} { // a leaf stand-in, then the intermediate
		resp = protowire.AppendTag(resp, 1, protowire.BytesType)
		resp = protowire.AppendBytes(resp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return stream.SendMsg(&resp)
}

// serveFakeCA runs the fake CA service over TLS with a serving certificate
// for localhost from issuer.
func serveFakeCA(t *testing.T, f *fakeCAService, issuer *x509.Certificate, key crypto.Signer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := mintServerCert(t, issuer, key, issuer)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})),
		grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(f.handle))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// confirmFixture is an agent whose cluster is a fake clientset holding
// istiod's Deployment and istio-ca-root-cert.
type confirmFixture struct {
	t    *testing.T
	a    *Agent
	kube *kubefake.Clientset
}

func newConfirmFixture(t *testing.T, restart RestartMode, probeAddr string) *confirmFixture {
	t.Helper()
	kube := kubefake.New("probe-token", &kubeclient.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod"}})
	a := &Agent{
		cfg: Config{Kube: kube, Secret: DefaultSecret, Restart: restart, IstiodDeployment: "istiod", IstiodStaleAfter: time.Minute,
			Probe: IstiodProbe{Addr: probeAddr, ServerName: "localhost"}},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return &confirmFixture{t: t, a: a, kube: kube}
}

// publish makes istio-ca-root-cert in istio-system hold roots.
func (f *confirmFixture) publish(roots ...*x509.Certificate) {
	f.t.Helper()
	data := map[string]string{"root-cert.pem": string(ca.EncodeCerts(roots))}
	if err := f.kube.PutConfigMap(context.Background(), "istio-system", RootCertConfigMap, data); err != nil {
		f.t.Fatal(err)
	}
}

// restarts counts the agent's patches of istiod's Deployment.
func (f *confirmFixture) restarts() int {
	return f.kube.Patches()
}

// secret is the cacerts Secret as read: intermediate inter under roots,
// at bundle sequence seq.
func secret(seq uint64, inter *x509.Certificate, roots ...*x509.Certificate) *Current {
	return &Current{
		Secret:  &kubeclient.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ca.AnnotationBundleSequence: strconv.FormatUint(seq, 10)}}},
		CACerts: &ca.CACerts{Cert: inter, Chain: []*x509.Certificate{inter, roots[0]}, Roots: roots},
	}
}

func (f *confirmFixture) want(st store.IstiodStatus, state string, seq uint64, serial string) {
	f.t.Helper()
	if st.State != state || st.BundleSequence != seq || st.Serial != serial {
		f.t.Fatalf("confirmIstiod = %s at bundle %d serial %q (%s); want %s at bundle %d serial %q",
			st.State, st.BundleSequence, st.Serial, st.Detail, state, seq, serial)
	}
}

// TestConfirmIstiodRoots: istiod publishing the Secret's roots is loaded;
// publishing others is pending until --istiod-stale-after has passed
// since the agent first saw the Secret content, then stale, with what
// istiod publishes; with --restart-istiod never nothing is rolled; once
// istiod publishes the new roots it is loaded at the new bundle.
func TestConfirmIstiodRoots(t *testing.T) {
	oldRoot, oldKey := confirmCA(t, "old root", nil, nil)
	newRoot, _ := confirmCA(t, "new root", nil, nil)
	inter, _ := confirmCA(t, "east", oldRoot, oldKey)
	f := newConfirmFixture(t, RestartNever, "")
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	serial := ca.SerialHex(inter.SerialNumber)

	f.publish(oldRoot)
	st := f.a.confirmIstiod(ctx, secret(1, inter, oldRoot), t0)
	f.want(st, store.IstiodLoaded, 1, serial)
	if st.Probed || len(st.Roots) != 1 || st.Roots[0] != ca.RootID(oldRoot) || !st.Since.Equal(t0) {
		t.Errorf("loaded: %+v, want not probed, the old root, since %s", st, t0)
	}

	// The Secret gains the new root; istiod still publishes the old one.
	prepared := secret(2, inter, oldRoot, newRoot)
	t1 := t0.Add(10 * time.Second)
	st = f.a.confirmIstiod(ctx, prepared, t1)
	f.want(st, store.IstiodPending, 1, serial) // the last loaded state is kept
	if !st.StaleSince.IsZero() || !strings.Contains(st.Detail, "istiod publishes roots") {
		t.Errorf("pending: %+v", st)
	}
	st = f.a.confirmIstiod(ctx, prepared, t1.Add(time.Minute-time.Nanosecond))
	f.want(st, store.IstiodPending, 1, serial)
	st = f.a.confirmIstiod(ctx, prepared, t1.Add(time.Minute))
	f.want(st, store.IstiodStale, 1, serial)
	if !st.StaleSince.Equal(t1.Add(time.Minute)) || !st.Since.Equal(t1) {
		t.Errorf("stale: since %s, stale since %s; want %s and %s", st.Since, st.StaleSince, t1, t1.Add(time.Minute))
	}
	if n := f.restarts(); n != 0 {
		t.Errorf("--restart-istiod never: istiod was rolled %d times", n)
	}
	if got := f.a.istiodNext(t1.Add(time.Hour), t1.Add(time.Minute)); !got.Equal(t1.Add(time.Minute + istiodRecheck)) {
		t.Errorf("while stale the agent looks again at %s, want %s later", got, istiodRecheck)
	}

	f.publish(newRoot, oldRoot) // order does not matter
	t2 := t1.Add(2 * time.Minute)
	st = f.a.confirmIstiod(ctx, prepared, t2)
	f.want(st, store.IstiodLoaded, 2, serial)
	if !st.StaleSince.IsZero() || len(st.Roots) != 2 || !st.Since.Equal(t2) {
		t.Errorf("loaded after catching up: %+v", st)
	}
	if got := f.a.istiodNext(t2.Add(time.Hour), t2); !got.Equal(t2.Add(time.Hour)) {
		t.Errorf("loaded: next check at %s, want the normal schedule", got)
	}

	// The agent remembers the roots it parsed, but not past a change of
	// the ConfigMap: a root-cert.pem that no longer parses is seen.
	bad := map[string]string{"root-cert.pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}
	if err := f.kube.PutConfigMap(ctx, "istio-system", RootCertConfigMap, bad); err != nil {
		t.Fatal(err)
	}
	st = f.a.confirmIstiod(ctx, prepared, t2.Add(time.Second))
	if st.State != store.IstiodUnconfirmed || !strings.Contains(st.Detail, "root-cert.pem") {
		t.Errorf("after istio-ca-root-cert changed to a bad certificate: %+v, want unconfirmed naming root-cert.pem", st)
	}
	f.publish(newRoot, oldRoot)
	st = f.a.confirmIstiod(ctx, prepared, t2.Add(time.Second))
	f.want(st, store.IstiodLoaded, 2, serial)

	// No ConfigMap (no istiod): unconfirmed, and it says why.
	if err := f.kube.DeleteConfigMap("istio-system", RootCertConfigMap); err != nil {
		t.Fatal(err)
	}
	st = f.a.confirmIstiod(ctx, prepared, t2.Add(time.Second))
	if st.State != store.IstiodUnconfirmed || !strings.Contains(st.Detail, "no ConfigMap istio-system/istio-ca-root-cert") {
		t.Errorf("without istio-ca-root-cert: %+v, want unconfirmed naming it", st)
	}
	// Long after the Secret changed, an unconfirmed istiod is looked at
	// rarely; within --istiod-stale-after of a new cacerts (an istiod that
	// has not published its roots yet) as often as a pending one.
	if got := f.a.istiodNext(t2.Add(time.Hour), t2.Add(time.Second)); !got.Equal(t2.Add(time.Second + unconfirmedRecheck)) {
		t.Errorf("unconfirmed, Secret unchanged since %s: next check at %s, want %s later", t1, got, unconfirmedRecheck)
	}
	t3 := t2.Add(time.Hour)
	st = f.a.confirmIstiod(ctx, secret(3, inter, newRoot, oldRoot), t3)
	if st.State != store.IstiodUnconfirmed {
		t.Fatalf("new cacerts without istio-ca-root-cert: %+v", st)
	}
	if got := f.a.istiodNext(t3.Add(time.Hour), t3); !got.Equal(t3.Add(istiodRecheck)) {
		t.Errorf("unconfirmed right after a new cacerts: next check at %s, want %s later", got, istiodRecheck)
	}
}

// TestConfirmIstiodProbe: with the probe, matching roots are not enough:
// istiod signing with the old intermediate is pending, then stale after
// the bound; signing with the Secret's intermediate is loaded (probed).
func TestConfirmIstiodProbe(t *testing.T) {
	root, rootKey := confirmCA(t, "root", nil, nil)
	oldInter, _ := confirmCA(t, "east old", root, rootKey)
	newInter, _ := confirmCA(t, "east new", root, rootKey)
	svc := &fakeCAService{}
	svc.set(oldInter)
	f := newConfirmFixture(t, RestartNever, serveFakeCA(t, svc, root, rootKey))
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	f.publish(root)

	st := f.a.confirmIstiod(ctx, secret(1, oldInter, root), t0)
	f.want(st, store.IstiodLoaded, 1, ca.SerialHex(oldInter.SerialNumber))
	if !st.Probed {
		t.Errorf("loaded by the probe but not marked probed: %+v", st)
	}

	renewed := secret(1, newInter, root)
	newSerial := ca.SerialHex(newInter.SerialNumber)
	st = f.a.confirmIstiod(ctx, renewed, t0.Add(time.Second))
	f.want(st, store.IstiodPending, 1, ca.SerialHex(oldInter.SerialNumber))
	if !st.Probed || !strings.Contains(st.Detail, "signs with intermediate "+ca.SerialHex(oldInter.SerialNumber)) {
		t.Errorf("pending on the old intermediate: %+v", st)
	}
	st = f.a.confirmIstiod(ctx, renewed, t0.Add(time.Second+time.Minute))
	f.want(st, store.IstiodStale, 1, ca.SerialHex(oldInter.SerialNumber))
	if !strings.Contains(st.Detail, newSerial) {
		t.Errorf("stale: %q does not name the Secret's intermediate %s", st.Detail, newSerial)
	}

	svc.set(newInter)
	st = f.a.confirmIstiod(ctx, renewed, t0.Add(2*time.Minute))
	f.want(st, store.IstiodLoaded, 1, newSerial)
	if !st.Probed {
		t.Errorf("loaded: %+v, want probed", st)
	}
	svc.mu.Lock()
	calls := svc.calls
	svc.mu.Unlock()
	if calls != 4 {
		t.Errorf("the fake istiod got %d probe CSRs, want one per confirmation (4)", calls)
	}
}

// TestConfirmIstiodRestartOnce: with --restart-istiod auto, a stale
// istiod is rolled once for the Secret content, checked again (still
// stale: not rolled again), and loaded once it serves the Secret; a new
// Secret content that goes stale may roll it once more.
func TestConfirmIstiodRestartOnce(t *testing.T) {
	oldRoot, oldKey := confirmCA(t, "old root", nil, nil)
	newRoot, newKey := confirmCA(t, "new root", nil, nil)
	inter, _ := confirmCA(t, "east", oldRoot, oldKey)
	f := newConfirmFixture(t, RestartAuto, "")
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	f.publish(oldRoot)
	f.want(f.a.confirmIstiod(ctx, secret(1, inter, oldRoot), t0), store.IstiodLoaded, 1, ca.SerialHex(inter.SerialNumber))

	prepared := secret(2, inter, oldRoot, newRoot)
	f.a.confirmIstiod(ctx, prepared, t0)
	if st := f.a.confirmIstiod(ctx, prepared, t0.Add(30*time.Second)); st.State != store.IstiodPending || f.restarts() != 0 {
		t.Fatalf("pending: %+v, %d restarts; want no restart before the bound", st, f.restarts())
	}
	st := f.a.confirmIstiod(ctx, prepared, t0.Add(time.Minute))
	if st.State != store.IstiodStale || f.restarts() != 1 || !strings.Contains(st.Detail, "rolled Deployment istiod") {
		t.Fatalf("stale: %+v, %d restarts; want one restart, said in the detail", st, f.restarts())
	}
	dep, err := f.kube.Deployments("istio-system").Get(ctx, "istiod", metav1.GetOptions{})
	if err != nil || dep.Spec.Template.Annotations[AnnotationRestartedAt] == "" {
		t.Fatalf("istiod's pod template has no %s annotation (%v)", AnnotationRestartedAt, err)
	}
	// Checked again: still stale, not rolled a second time.
	st = f.a.confirmIstiod(ctx, prepared, t0.Add(time.Minute+istiodRecheck))
	if st.State != store.IstiodStale || f.restarts() != 1 || !strings.Contains(st.Detail, "rolled once already") {
		t.Fatalf("re-check while stale: %+v, %d restarts; want still one", st, f.restarts())
	}
	// The rolled istiod serves the Secret.
	f.publish(oldRoot, newRoot)
	f.want(f.a.confirmIstiod(ctx, prepared, t0.Add(2*time.Minute)), store.IstiodLoaded, 2, ca.SerialHex(inter.SerialNumber))

	// A new Secret content (the activated intermediate) gets one roll of
	// its own if istiod misses it.
	newInter, _ := confirmCA(t, "east 2", newRoot, newKey)
	activated := secret(3, newInter, newRoot)
	t3 := t0.Add(time.Hour)
	f.a.confirmIstiod(ctx, activated, t3)
	if st = f.a.confirmIstiod(ctx, activated, t3.Add(time.Minute)); st.State != store.IstiodStale || f.restarts() != 2 {
		t.Fatalf("the next content stale: %+v, %d restarts; want a second restart", st, f.restarts())
	}
}
