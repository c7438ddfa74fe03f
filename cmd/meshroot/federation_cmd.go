package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/store"
)

func newFederationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "federation", Short: "Federate with foreign trust domains (SPIFFE bundle endpoints)"}
	cmd.AddCommand(newFederationAddCmd(g), newFederationListCmd(g, "list", "List federation peers"),
		newFederationListCmd(g, "status", "Show each peer's bundle and the watcher's last outcome"),
		newFederationRemoveCmd(g), newFederationRefreshCmd(g))
	return cmd
}

func newFederationAddCmd(g *globals) *cobra.Command {
	var url, profile, endpointID, bootstrap string
	cmd := &cobra.Command{
		Use:   "add TRUST_DOMAIN --url URL --profile https_web|https_spiffe [--endpoint-spiffe-id ID] [--bootstrap-bundle FILE]",
		Short: "Fetch a foreign trust domain's bundle and deliver it to every mesh",
		Long: `Register a foreign trust domain. The server's federation watcher fetches
its bundle from URL, honouring the peer's refresh hint, and keeps the last
good one. https_web authenticates the endpoint with Web PKI; https_spiffe
with the bundle held for the peer (--bootstrap-bundle, SPIFFE JSON or PEM,
the first time) and the SPIFFE ID it must present (--endpoint-spiffe-id).`,
		Args: exactArgs(1, "TRUST_DOMAIN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := ca.AddFederationRequest{TrustDomain: args[0], URL: url, Profile: store.FederationProfile(profile), EndpointSPIFFEID: endpointID}
			if bootstrap != "" {
				b, err := readBounded(bootstrap, bundle.MaxSize)
				if err != nil {
					return usageError{fmt.Errorf("--bootstrap-bundle: %w", err)}
				}
				req.BootstrapBundle = b
			}
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) ([]store.FederationPeer, error) {
				p, err := a.AddFederation(ctx, req)
				return []store.FederationPeer{p}, err
			}, printPeers)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&url, "url", "", "the peer's bundle endpoint, https://...")
	fl.StringVar(&profile, "profile", string(store.ProfileHTTPSWeb), "https_web or https_spiffe")
	fl.StringVar(&endpointID, "endpoint-spiffe-id", "", "https_spiffe: the SPIFFE ID the endpoint presents")
	fl.StringVar(&bootstrap, "bootstrap-bundle", "", "https_spiffe: the peer's bundle to trust the first time (SPIFFE JSON or PEM)")
	return cmd
}

func newFederationListCmd(g *globals, use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, ca.Admin.ListFederation, printPeers)
		},
	}
}

func newFederationRemoveCmd(g *globals) *cobra.Command {
	return actionCmd(g, "remove TRUST_DOMAIN", "Stop federating; the peer's bundle leaves the meshes",
		func(ctx context.Context, a ca.Admin, td string) (string, error) {
			return "no longer federating with " + td, a.RemoveFederation(ctx, td)
		})
}

func newFederationRefreshCmd(g *globals) *cobra.Command {
	return actionCmd(g, "refresh TRUST_DOMAIN", "Fetch a peer's bundle now",
		func(ctx context.Context, a ca.Admin, td string) (string, error) {
			_, err := a.RefreshFederation(ctx, td)
			if errors.Is(err, ca.ErrNoFederationWatchers) {
				err = usageError{errors.New("federation refresh asks the running server's watchers: drop --data-dir")}
			}
			return "refresh of " + td + " requested: see `meshroot federation status`", err
		})
}

type peerView struct {
	TrustDomain      string    `json:"trust_domain"`
	URL              string    `json:"url"`
	Profile          string    `json:"profile"`
	EndpointSPIFFEID string    `json:"endpoint_spiffe_id,omitempty"`
	HasBundle        bool      `json:"has_bundle"`
	Sequence         uint64    `json:"sequence"`
	BundleUpdatedAt  time.Time `json:"bundle_updated_at"`
	LastAttempt      time.Time `json:"last_attempt"`
	LastSuccess      time.Time `json:"last_success"`
	LastError        string    `json:"last_error,omitempty"`
	NextAttempt      time.Time `json:"next_attempt"`
	// Bundle is the SPIFFE bundle document held for the peer.
	Bundle json.RawMessage `json:"bundle,omitempty"`
	// Authorities counts its X.509 authorities.
	Authorities int `json:"x509_authorities"`
}

func printPeers(w io.Writer, format string, peers []store.FederationPeer) error {
	views := make([]peerView, len(peers))
	rows := make([][]string, len(peers))
	for i, p := range peers {
		views[i] = peerView{
			TrustDomain: p.TrustDomain, URL: p.URL, Profile: string(p.Profile), EndpointSPIFFEID: p.EndpointSPIFFEID,
			HasBundle: len(p.Bundle) > 0, Sequence: p.Sequence, BundleUpdatedAt: p.BundleUpdatedAt,
			LastAttempt: p.Status.LastAttempt, LastSuccess: p.Status.LastSuccess, LastError: p.Status.LastError, NextAttempt: p.Status.NextAttempt,
		}
		if len(p.Bundle) > 0 && json.Valid(p.Bundle) {
			views[i].Bundle = json.RawMessage(p.Bundle)
			if td, err := spiffeid.TrustDomainFromString(p.TrustDomain); err == nil {
				if b, err := spiffebundle.Parse(td, p.Bundle); err == nil {
					views[i].Authorities = len(b.X509Authorities())
				}
			}
		}
		errText := p.Status.LastError
		if errText == "" {
			errText = "-"
		}
		rows[i] = []string{p.TrustDomain, string(p.Profile), p.URL, strconv.FormatBool(len(p.Bundle) > 0), strconv.FormatUint(p.Sequence, 10), fmtTime(p.Status.LastSuccess), errText}
	}
	if format == "json" {
		return printJSON(w, views)
	}
	return printTable(w, []string{"TRUST DOMAIN", "PROFILE", "URL", "BUNDLE", "SEQ", "LAST SUCCESS", "LAST ERROR"}, rows)
}
