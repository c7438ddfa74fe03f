package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store"
)

// devCAFile holds, in dev mode, the trust bundle that agents use to verify
// the server.
const devCAFile = "server-ca.pem"

// devBootstrap creates, on first start, a root and the cluster "dev",
// writes the trust bundle to caFile, and returns a fresh join token.
func devBootstrap(ctx context.Context, svc *ca.Service, td, caFile string) (string, error) {
	ctx = ca.WithActor(ctx, "serve:--dev")
	if _, err := svc.ActiveRoot(ctx); err != nil {
		if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: td}); err != nil {
			return "", err
		}
	}
	tb, err := svc.TrustBundle(ctx)
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteFile(caFile, ca.EncodeCerts(tb.Roots), 0o644); err != nil {
		return "", err
	}
	if _, err := svc.Store().GetCluster(ctx, "dev"); errors.Is(err, store.ErrNotFound) {
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "dev"}); err != nil {
			return "", err
		}
	}
	t, err := svc.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: "dev", TTL: time.Hour})
	return t.Token, err
}

// printDevBanner writes the trust bundle for agents to trust the server and
// prints where everything is, once the server is ready.
func printDevBanner(ctx context.Context, cmd *cobra.Command, srv *server.Server, cfg serveConfig, token string) {
	select {
	case <-ctx.Done():
		return
	case <-srv.Ready():
	}
	caFile := filepath.Join(cfg.DataDir, devCAFile)
	abs, _ := filepath.Abs(caFile)
	out := cmd.ErrOrStderr()
	fleet := fleetBanner(cfg, srv)
	fmt.Fprintf(out, `
meshroot dev server ready
  Issuer API (gRPC/TLS): %s
  health, metrics:       http://%s/healthz  /readyz  /metrics
  fleet page:            %s
  admin socket:          %s   (the CLI uses it by default: try 'meshroot cluster list')
  trust bundle (PEM):    %s

Bootstrap a cluster's cacerts (the join token is single-use, valid 1h: run one of these).
No Kubernetes at hand? Write them into a folder, and watch cluster "dev" appear on the fleet page:
  meshroot agent --server %s --server-ca %s --cluster dev \
    --join-token %s --out ./dev-cacerts

Into a cluster's istio-system/cacerts Secret:
  meshroot agent --once --server %s --server-ca %s --cluster dev \
    --join-token %s --kubeconfig ~/.kube/config

`, srv.Addr(), srv.HTTPAddr(), fleet, cfg.AdminSocket, abs, srv.Addr(), abs, token, srv.Addr(), abs, token)
}
