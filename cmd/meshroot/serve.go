package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/spiffe"
	"github.com/meshroot/meshroot/store/postgres"
)

// serveConfig is the server's configuration file (YAML). Flags and
// MESHROOT_* variables override it.
type serveConfig struct {
	DataDir              string       `yaml:"dataDir"`
	Store                string       `yaml:"store"`
	StoreFile            string       `yaml:"storeFile"`
	TrustDomain          string       `yaml:"trustDomain"`
	Listen               string       `yaml:"listen"`
	HTTPListen           string       `yaml:"httpListen"`
	AdminSocket          string       `yaml:"adminSocket"`
	AdminListen          string       `yaml:"adminListen"`
	ServerSANs           []string     `yaml:"serverSANs"`
	PassphraseFile       string       `yaml:"passphraseFile"`
	InsecurePlaintextKey bool         `yaml:"insecurePlaintextKey"`
	RefreshHint          duration     `yaml:"refreshHint"`
	LogLevel             string       `yaml:"logLevel"`
	Policy               policyConfig `yaml:"policy"`
	BundleEndpoint       endpointConf `yaml:"bundleEndpoint"`
	Keys                 keysConfig   `yaml:"keys"`
	Federation           fedConf      `yaml:"federation"`
	FleetPage            bool         `yaml:"fleetPage"`
	FleetPageListen      string       `yaml:"fleetPageListen"`
	ReplicaID            string       `yaml:"replicaID"`
	// MaxConnections bounds open connections to the Issuer service
	// (default 4096): every agent holds one for its watch, and one more
	// while it reports.
	MaxConnections int `yaml:"maxConnections"`
}

// endpointConf configures the SPIFFE bundle endpoint.
type endpointConf struct {
	// Listen is its address; "off" disables it.
	Listen string `yaml:"listen"`
	// Profile is https_spiffe (default: an SVID from the authority) or
	// https_web (certFile and keyFile, reloaded when they change).
	Profile  string `yaml:"profile"`
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// fedConf bounds the federation watchers' refresh interval.
type fedConf struct {
	MinRefresh duration `yaml:"minRefresh"`
	MaxRefresh duration `yaml:"maxRefresh"`
	// CAFile adds roots for https_web peers (default: system roots).
	CAFile string `yaml:"caFile"`
}

type policyConfig struct {
	DefaultTTL            duration `yaml:"defaultTTL"`
	MaxTTL                duration `yaml:"maxTTL"`
	MinTTL                duration `yaml:"minTTL"`
	TrustDomainConstraint bool     `yaml:"trustDomainConstraint"`
	// SupersededRenewalGrace is how long a superseded intermediate may
	// still renew (default 10m).
	SupersededRenewalGrace duration `yaml:"supersededRenewalGrace"`
}

// duration reads "24h"-style strings in YAML.
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 24h", n.Line, n.Value)
	}
	*d = duration(v)
	return nil
}

// maxConfigFile bounds the configuration file.
const maxConfigFile = 1 << 20

func loadServeConfig(path string) (serveConfig, error) {
	var c serveConfig
	if path == "" {
		return c, nil
	}
	data, err := readBounded(path, maxConfigFile)
	if err != nil {
		return c, usageError{fmt.Errorf("config: %w", err)}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, usageError{fmt.Errorf("config %s: %v", path, err)}
	}
	if c.MaxConnections < 0 {
		return c, usageError{fmt.Errorf("config %s: maxConnections is %d: want a positive number, or leave it out for the default (4096)", path, c.MaxConnections)}
	}
	return c, nil
}

func newServeCmd(g *globals) *cobra.Command {
	var configFile, listen, httpListen, adminListen, fleetListen, td, bundleListen, bundleProfile, bundleCert, bundleKey, storeFlag, storeFileFlag string
	var sans []string
	var dev, fleetPage bool
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--dev]",
		Short: "Run the meshroot server: Issuer API for agents (gRPC/TLS), Admin API on a unix socket, health and metrics",
		Long: `Run the meshroot server.

--dev starts everything on 127.0.0.1 with a data dir ./meshroot-data, creates
a root for the trust domain (default cluster.local) and a cluster "dev" on
first start, and prints a ready-to-paste agent command with a fresh join
token. Keys are stored unencrypted in dev mode unless a passphrase is given.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadServeConfig(configFile)
			if err != nil {
				return err
			}
			fl := cmd.Flags()
			pf := cmd.Root().PersistentFlags()
			// Precedence: flag or MESHROOT_* variable, then config file, then default.
			pick := func(changed bool, flagVal, cfgVal, def string) string {
				switch {
				case changed:
					return flagVal
				case cfgVal != "":
					return cfgVal
				}
				return def
			}
			defListen, defHTTP, defDataDir, defTD := ":8443", ":8080", g.dataDir, "cluster.local"
			if dev {
				defListen, defHTTP, defDataDir = "127.0.0.1:8443", "127.0.0.1:8080", "./meshroot-data"
			}
			cfg.Listen = pick(fl.Changed("listen"), listen, cfg.Listen, defListen)
			cfg.HTTPListen = pick(fl.Changed("http-listen"), httpListen, cfg.HTTPListen, defHTTP)
			cfg.DataDir = pick(pf.Changed("data-dir"), g.dataDir, cfg.DataDir, defDataDir)
			cfg.TrustDomain = pick(fl.Changed("trust-domain"), td, cfg.TrustDomain, defTD)
			if fl.Changed("store") || fl.Changed("store-file") {
				cfg.Store, cfg.StoreFile = storeFlag, storeFileFlag
			}
			cfg.PassphraseFile = pick(pf.Changed("passphrase-file"), g.passphraseFile, cfg.PassphraseFile, "")
			cfg.AdminSocket = pick(g.socketSet(cmd), g.socket, cfg.AdminSocket, g.socket)
			cfg.AdminListen = pick(fl.Changed("admin-listen"), adminListen, cfg.AdminListen, "")
			if fl.Changed("san") || len(cfg.ServerSANs) == 0 {
				cfg.ServerSANs = sans
			}
			if len(cfg.ServerSANs) == 0 {
				cfg.ServerSANs = defaultSANs(cfg.Listen)
			}
			cfg.InsecurePlaintextKey = cfg.InsecurePlaintextKey || g.insecurePlaintext
			mergeKeys(&cfg.Keys, g.keys, pf)
			defBundle := ":8444"
			if dev {
				defBundle = "127.0.0.1:8444"
			}
			cfg.BundleEndpoint.Listen = pick(fl.Changed("bundle-endpoint-listen"), bundleListen, cfg.BundleEndpoint.Listen, defBundle)
			cfg.BundleEndpoint.Profile = pick(fl.Changed("bundle-endpoint-profile"), bundleProfile, cfg.BundleEndpoint.Profile, string(spiffe.ProfileSPIFFE))
			cfg.BundleEndpoint.CertFile = pick(fl.Changed("bundle-endpoint-cert"), bundleCert, cfg.BundleEndpoint.CertFile, "")
			cfg.BundleEndpoint.KeyFile = pick(fl.Changed("bundle-endpoint-key"), bundleKey, cfg.BundleEndpoint.KeyFile, "")
			cfg.FleetPageListen = pick(fl.Changed("fleet-page-listen"), fleetListen, cfg.FleetPageListen, "")
			if fl.Changed("fleet-page") {
				cfg.FleetPage = fleetPage
			} else if dev {
				cfg.FleetPage = true
			}
			return runServe(cmd, g, cfg, dev)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configFile, "config", "", "YAML configuration file (env MESHROOT_CONFIG)")
	fl.BoolVar(&dev, "dev", false, "development mode: everything on 127.0.0.1, a root and a cluster created on first start")
	fl.StringVar(&listen, "listen", ":8443", "Issuer API address (gRPC over TLS)")
	fl.StringVar(&httpListen, "http-listen", ":8080", "address of /healthz, /readyz and /metrics")
	fl.BoolVar(&fleetPage, "fleet-page", false, "serve the read-only fleet page at /fleet on the HTTP listener, which must be loopback (on with --dev)")
	fl.StringVar(&fleetListen, "fleet-page-listen", "", "serve the fleet page there instead, over HTTPS to holders of an admin client certificate (viewer or operator; needs --admin-listen)")
	fl.StringVar(&adminListen, "admin-listen", "", "address of the remote admin listener (Admin API over mTLS with admin client certificates; off when empty)")
	fl.StringVar(&td, "trust-domain", "cluster.local", "trust domain of the root created by --dev")
	fl.StringVar(&storeFlag, "store", "", "state store: a postgres:// URL (default: SQLite in the data dir); prefer --store-file, a command line is visible to other users")
	fl.StringVar(&storeFileFlag, "store-file", "", "file holding the postgres:// URL of the state store (a Kubernetes Secret; not readable by others)")
	fl.StringSliceVar(&sans, "san", nil, "DNS names and IPs in the server certificate (default: localhost, 127.0.0.1 and the host name)")
	fl.StringVar(&bundleListen, "bundle-endpoint-listen", ":8444", "SPIFFE bundle endpoint address, or off")
	fl.StringVar(&bundleProfile, "bundle-endpoint-profile", string(spiffe.ProfileSPIFFE), "https_spiffe (an SVID from the authority) or https_web (--bundle-endpoint-cert/-key)")
	fl.StringVar(&bundleCert, "bundle-endpoint-cert", "", "https_web: certificate chain PEM, reloaded when it changes")
	fl.StringVar(&bundleKey, "bundle-endpoint-key", "", "https_web: private key PEM, reloaded when it changes")
	return cmd
}

func defaultSANs(listen string) []string {
	sans := []string{"localhost", "127.0.0.1"}
	if h, err := os.Hostname(); err == nil && h != "" && !strings.HasPrefix(listen, "127.") {
		sans = append(sans, h)
	}
	return sans
}

func runServe(cmd *cobra.Command, g *globals, cfg serveConfig, dev bool) error {
	level := slog.LevelInfo
	if cfg.LogLevel != "" {
		if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
			return usageError{fmt.Errorf("logLevel %q: use debug, info, warn or error", cfg.LogLevel)}
		}
	}
	log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	plugins.SetLogger(log)
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	dsn, err := storeDSN(cfg.Store, cfg.StoreFile)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, dsn, cfg.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	storeName := filepath.Join(cfg.DataDir, dbFile)
	if dsn != "" {
		storeName = postgres.Redact(dsn)
	}
	g.passphraseFile = cfg.PassphraseFile
	pass, err := g.passphrase()
	if err != nil {
		return err
	}
	km, err := serveKeyManager(ctx, &cfg, st, pass, cfg.InsecurePlaintextKey || (dev && len(pass) == 0), dsn != "", log)
	if err != nil {
		return err
	}
	defer km.Close()
	policy := ca.Policy{
		DefaultTTL: time.Duration(cfg.Policy.DefaultTTL), MaxTTL: time.Duration(cfg.Policy.MaxTTL),
		MinTTL: time.Duration(cfg.Policy.MinTTL), TrustDomainConstraint: cfg.Policy.TrustDomainConstraint,
		SupersededRenewalGrace: time.Duration(cfg.Policy.SupersededRenewalGrace),
	}
	svc, err := newAuthority(st, km, policy, cfg.Keys)
	if err != nil {
		return usageError{fmt.Errorf("policy: %w", err)}
	}
	// The store holds the one policy every issuing path uses; a policy block
	// in the configuration file is written there at every start.
	if cfg.Policy != (policyConfig{}) {
		if _, changed, err := svc.SetPolicy(ca.WithActor(ctx, "serve:config"), policy); err != nil {
			return usageError{fmt.Errorf("policy: %w", err)}
		} else if changed {
			log.Info("stored the intermediate policy of the configuration file (audited as policy.set)")
		}
	}
	var devToken string
	if dev {
		if devToken, err = devBootstrap(ctx, svc, cfg.TrustDomain, filepath.Join(cfg.DataDir, devCAFile)); err != nil {
			return err
		}
	}
	refreshHint := time.Duration(cfg.RefreshHint)
	if refreshHint == 0 {
		refreshHint = 5 * time.Minute
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := federation.RegisterMetrics(reg); err != nil {
		return err
	}
	hub := server.NewBundleHub(svc, log)
	lead, err := newLeadership(ctx, cfg, st, svc, hub, reg, log)
	if err != nil {
		return err
	}
	var webRoots *x509.CertPool
	if cfg.Federation.CAFile != "" {
		pemData, err := readBounded(cfg.Federation.CAFile, maxImportFile)
		if err != nil {
			return usageError{fmt.Errorf("federation.caFile: %w", err)}
		}
		if webRoots, err = x509.SystemCertPool(); err != nil || webRoots == nil {
			webRoots = x509.NewCertPool()
		}
		if !webRoots.AppendCertsFromPEM(pemData) {
			return usageError{fmt.Errorf("federation.caFile %s holds no PEM certificate", cfg.Federation.CAFile)}
		}
	}
	fed := federation.NewFederator(st, federation.FederatorOptions{
		MinRefresh: time.Duration(cfg.Federation.MinRefresh), MaxRefresh: time.Duration(cfg.Federation.MaxRefresh),
		Roots: webRoots, Log: log.With("component", "federation"), OnChange: func(string) { hub.Poke() },
		UserAgent: federationUserAgent(lead),
	})
	page, err := newFleetPage(cfg, svc, log)
	if err != nil {
		return err
	}
	srv, err := server.NewServer(server.ServerConfig{
		Service: svc, Store: st, Listen: cfg.Listen, HTTPListen: cfg.HTTPListen, AdminSocket: cfg.AdminSocket, AdminListen: cfg.AdminListen,
		ServerNames: cfg.ServerSANs, RefreshHint: refreshHint, Log: log, Registry: reg, Hub: hub, Federation: leaderFederation{fed, lead},
		FleetPage: page, FleetPageListen: cfg.FleetPageListen, Leadership: lead,
		Limits: server.Limits{MaxConnections: cfg.MaxConnections},
	})
	if err != nil {
		return err
	}
	var endpoint *spiffe.Endpoint
	var svids *spiffe.SVIDSource
	if cfg.BundleEndpoint.Listen != "off" {
		ecfg := spiffe.EndpointConfig{
			Listen: cfg.BundleEndpoint.Listen, Profile: spiffe.Profile(cfg.BundleEndpoint.Profile),
			CertFile: cfg.BundleEndpoint.CertFile, KeyFile: cfg.BundleEndpoint.KeyFile,
			Handler: spiffe.NewHandler(func() (ca.TrustBundle, bool) {
				tb, ok := hub.Local()
				tb.RefreshHint = refreshHint
				return tb, ok
			}, refreshHint, log),
			Log: log.With("component", "bundle-endpoint"),
		}
		if ecfg.Profile == spiffe.ProfileSPIFFE {
			// The data dir's trust domain (set by its first root).
			svids = spiffe.NewSVIDSource(svc, "", 0, log.With("component", "bundle-endpoint-svid"))
			ecfg.SVIDs = svids
		}
		if endpoint, err = spiffe.NewEndpoint(ecfg); err != nil {
			return usageError{fmt.Errorf("bundle endpoint: %w", err)}
		}
	}
	log.Info("meshroot server starting", "version", version, "issuer", srv.Addr(), "http", srv.HTTPAddr(),
		"admin_socket", cfg.AdminSocket, "admin_listen", srv.AdminAddr(), "data_dir", cfg.DataDir, "store", storeName, "bundle_endpoint", endpointAddr(endpoint), "bundle_endpoint_profile", cfg.BundleEndpoint.Profile,
		"fleet_page", fleetURL(cfg, srv), "replica", lead.Replica())
	if dev {
		go printDevBanner(ctx, cmd, srv, cfg, devToken)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	background := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				log.Error("background task stopped", "error", err)
				cancel()
			}
		}()
	}
	background(func(ctx context.Context) error { runSingletons(ctx, lead, fed, hub, svc, log); return nil })
	if _, err := svc.ActiveRoot(ctx); err != nil {
		log.Info("no root yet: the server waits for one; create it through the admin socket",
			"run", fmt.Sprintf("meshroot root init --trust-domain TD --socket %s", cfg.AdminSocket))
	}
	if svids != nil {
		background(func(ctx context.Context) error { return runSVIDs(ctx, hub, svids) })
	}
	if endpoint != nil {
		background(endpoint.Run)
	}
	err = srv.Run(runCtx)
	cancel()
	wg.Wait()
	return err
}

// runSVIDs keeps the bundle endpoint's SVID: it starts issuing once there
// is an active root (until then there is nothing to sign with, and nothing
// to complain about), and reissues when the active root changes (a new
// SVID chain); other bundle changes do not matter to it.
func runSVIDs(ctx context.Context, hub *server.BundleHub, svids *spiffe.SVIDSource) error {
	var active string
	errc := make(chan error, 1)
	for {
		b, ok, changed := hub.Current()
		if ok && b.ActiveRootID != "" && b.ActiveRootID != active {
			if active == "" {
				go func() { errc <- svids.Run(ctx) }()
			} else {
				svids.Reissue()
			}
			active = b.ActiveRootID
		}
		select {
		case <-ctx.Done():
			if active != "" {
				return <-errc
			}
			return nil
		case err := <-errc:
			return err
		case <-changed:
		}
	}
}

func endpointAddr(e *spiffe.Endpoint) string {
	if e == nil {
		return "off"
	}
	return e.Addr()
}

// mergeKeys lets key flags (or their MESHROOT_* variables) override the
// config file's keys block; a setting absent from both takes the flag's
// default.
func mergeKeys(cfg *keysConfig, flags keysConfig, pf *pflag.FlagSet) {
	for _, f := range []struct {
		flag  string
		dst   *string
		value string
	}{
		{"key", &cfg.Create, flags.Create},
		{"vault-addr", &cfg.Vault.Address, flags.Vault.Address},
		{"vault-ca-file", &cfg.Vault.CAFile, flags.Vault.CAFile},
		{"vault-auth", &cfg.Vault.AuthMethod, flags.Vault.AuthMethod},
		{"vault-token-file", &cfg.Vault.TokenFile, flags.Vault.TokenFile},
		{"vault-role-id", &cfg.Vault.RoleID, flags.Vault.RoleID},
		{"vault-secret-id-file", &cfg.Vault.SecretIDFile, flags.Vault.SecretIDFile},
		{"vault-role", &cfg.Vault.Role, flags.Vault.Role},
		{"vault-jwt-file", &cfg.Vault.JWTFile, flags.Vault.JWTFile},
		{"step-ca-key-file", &cfg.StepCA.KeyFile, flags.StepCA.KeyFile},
		{"step-ca-server-key-file", &cfg.StepCA.ServerKeyFile, flags.StepCA.ServerKeyFile},
		{"step-ca-password-file", &cfg.StepCA.PasswordFile, flags.StepCA.PasswordFile},
		{"plugin", &cfg.Plugin, flags.Plugin},
	} {
		if pf.Changed(f.flag) || *f.dst == "" {
			*f.dst = f.value
		}
	}
}
