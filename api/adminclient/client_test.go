package adminclient_test

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/api/adminclient"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// newAuthority is a real authority over a SQLite file and disk keys.
func newAuthority(t *testing.T, dir string) (*ca.Service, store.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// remote is a real server over its own data dir, reached through the
// client over its admin unix socket.
func remote(t *testing.T) *adminclient.Client {
	t.Helper()
	dir := t.TempDir()
	svc, st := newAuthority(t, dir)
	socket := filepath.Join(dir, "run", "admin.sock")
	srv, err := server.NewServer(server.ServerConfig{
		Service: svc, Store: st, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", AdminSocket: socket,
		ServerNames: []string{"localhost"}, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminclient.New(conn)
}

// outcome is what one run of the script below saw, without what differs
// between two authorities by nature (ids, serials, keys, times).
type outcome struct {
	RootState, ClusterTD       string
	DetailBefore, DetailAfter  string
	TokenReview, KubeconfigOut bool
	Intermediates              []string
	RevokedStatus              string
	AuditActions               []string
	AuditVerified              int
	NextPhase                  string
	BundleRoots                int
	TokenCluster               string
	TokenTTL                   time.Duration
	RefusedUnknown             bool
	Peers                      int
}

const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: "secret"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`

// script runs the same admin verbs through a, as the CLI would.
func script(t *testing.T, a ca.Admin) (outcome, error) {
	t.Helper()
	ctx := ca.WithActor(context.Background(), "test")
	var o outcome
	r, err := a.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	o.RootState = string(r.State)
	c, err := a.AddCluster(ctx, ca.AddClusterRequest{Name: "east", Auth: store.ClusterAuth{Kubeconfig: []byte(kubeconfig), ServiceAccounts: []string{"istio-system/meshroot-agent"}}})
	if err != nil {
		t.Fatal(err)
	}
	o.ClusterTD = c.TrustDomain
	d, err := a.ShowCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	o.TokenReview, o.KubeconfigOut = d.TokenReview, len(d.Cluster.Auth.Kubeconfig) > 0
	o.DetailBefore = describe(d)

	tok, err := a.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: "east", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, "mrt.") {
		t.Errorf("join token %q is not in the format authentication verifies", tok.Token)
	}
	o.TokenCluster, o.TokenTTL = tok.Cluster, time.Until(tok.ExpiresAt).Round(time.Minute)

	k, _ := keys.ECP256.Generate()
	der, _ := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, k)
	csr, _ := x509.ParseCertificateRequest(der)
	issued, err := a.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	serial := ca.SerialHex(issued.Cert.SerialNumber)
	if d, err = a.ShowCluster(ctx, "east"); err != nil || d.Current == nil || d.Current.Serial != serial {
		t.Fatalf("cluster show after issue: current %+v, %v; want serial %s", d.Current, err, serial)
	}
	o.DetailAfter = describe(d)
	list, err := a.ListIntermediates(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		o.Intermediates = append(o.Intermediates, in.Cluster+"/"+string(in.Status))
	}
	rev, err := a.RevokeIntermediate(ctx, serial, "test")
	if err != nil {
		t.Fatal(err)
	}
	o.RevokedStatus = string(rev.Status)
	st, err := a.RotationStatus(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	o.NextPhase = st.NextPhase
	tb, err := a.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o.BundleRoots = len(tb.Roots)
	_, err = a.ShowCluster(ctx, "nowhere")
	var pe *ca.PolicyError
	o.RefusedUnknown = errors.As(err, &pe) || status.Code(err) == codes.InvalidArgument
	peers, err := a.ListFederation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o.Peers = len(peers)
	if err := a.RemoveCluster(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	entries, err := a.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		o.AuditActions = append(o.AuditActions, e.Action+":"+e.Result)
	}
	if o.AuditVerified, err = a.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = a.RefreshFederation(ctx, "peer.example")
	return o, err
}

func describe(d ca.ClusterDetail) string {
	s := d.Cluster.Name + " " + d.Cluster.TrustDomain + " " + d.Cluster.Auth.ServiceAccounts[0]
	if d.Current != nil {
		s += " current " + d.Current.Cluster + "/" + string(d.Current.Status)
	}
	return s
}

// The client and the authority are one admin surface: the same verbs give
// the same answers whether they run on a data dir or through the server.
func TestClientAnswersAsTheAuthority(t *testing.T) {
	local, _ := newAuthority(t, t.TempDir())
	local.SetJoinTokenMinter(authn.NewJoinToken)
	want, localErr := script(t, local.Admin())
	got, remoteErr := script(t, remote(t).Admin())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("through the admin API:\n%+v\non the authority:\n%+v", got, want)
	}
	if want.KubeconfigOut || !want.TokenReview {
		t.Errorf("cluster show: kubeconfig returned %v, token review %v; want the credential withheld and its presence told", want.KubeconfigOut, want.TokenReview)
	}
	if want.DetailAfter == want.DetailBefore || len(want.AuditActions) == 0 || want.AuditVerified != len(want.AuditActions) {
		t.Errorf("script saw too little: %+v", want)
	}
	// Federation refresh needs the server's watchers: the authority says
	// so, the server (started without watchers) too.
	if !errors.Is(localErr, ca.ErrNoFederationWatchers) {
		t.Errorf("refresh on the authority alone: %v, want ErrNoFederationWatchers", localErr)
	}
	if status.Code(remoteErr) != codes.FailedPrecondition {
		t.Errorf("refresh through a server without watchers: %v, want FailedPrecondition", remoteErr)
	}
}

// TestClientAdminComplete: the client fills every concern of ca.Admin, so no
// verb panics on a nil interface through the socket.
func TestClientAdminComplete(t *testing.T) {
	a := adminclient.New(nil).Admin()
	v := reflect.ValueOf(a)
	for i := range v.NumField() {
		if v.Field(i).IsNil() {
			t.Errorf("Client.Admin leaves %s unset", v.Type().Field(i).Name)
		}
	}
}
