// Command meshroot-bundle serves a trust domain's SPIFFE bundle at the
// network edge: it fetches the bundle from meshroot's own bundle endpoint
// (either profile), checks every answer against the bundle it holds, and
// serves it in the https_web profile. It holds no CA key, no store and no
// credential but its own TLS key, and links none of them (deps_test.go), so
// that the endpoint foreign trust domains reach from outside runs apart
// from the CA and in a fraction of its memory (docs/federation.md,
// "A bundle endpoint at the edge").
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	_ "github.com/meshroot/meshroot/cmd/internal/pprofdebug" // net/http/pprof in -tags pprof builds only
	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/spiffe"
	"github.com/meshroot/meshroot/spiffe/relay"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `meshroot-bundle: serve a trust domain's SPIFFE bundle relayed from meshroot's bundle endpoint

Usage:
  meshroot-bundle --trust-domain TD --upstream URL --cert FILE --key FILE [flags]

The relay fetches the bundle from --upstream at once and every --poll,
refuses a bundle whose sequence goes back (or whose roots change under the same
sequence), keeps serving the last good bundle while the upstream cannot be
reached, and answers 503 until it holds one. It serves the https_web
profile only: the https_spiffe profile needs an SVID of the trust domain,
which only the meshroot server holds.

Flags:
`

// config is what the flags say.
type config struct {
	trustDomain, upstream      string
	upstreamCA, upstreamBundle string
	upstreamID                 string
	listen, certFile, keyFile  string
	cacheFile                  string
	poll                       time.Duration
	logLevel                   string
	printVersion               bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command: exit code 2 for bad flags, 1 for the rest.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshroot-bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var c config
	fs.StringVar(&c.trustDomain, "trust-domain", "", "trust domain whose bundle is relayed (required)")
	fs.StringVar(&c.upstream, "upstream", "", "meshroot's bundle endpoint, https://HOST:PORT/ (required)")
	fs.StringVar(&c.upstreamCA, "upstream-ca", "", "PEM roots that authenticate an https_web upstream (default: the system roots)")
	fs.StringVar(&c.upstreamBundle, "upstream-bundle", "", "bootstrap bundle of the trust domain (SPIFFE bundle document or PEM) for an https_spiffe upstream; it authenticates the upstream until the relay holds a bundle, and is never served")
	fs.StringVar(&c.upstreamID, "upstream-id", "", "SPIFFE ID an https_spiffe upstream presents (default with --upstream-bundle: spiffe://TD"+spiffe.BundleEndpointPath+")")
	fs.StringVar(&c.listen, "listen", ":8443", "TCP address to serve the bundle on")
	fs.StringVar(&c.certFile, "cert", "", "PEM certificate (chain) the relay serves, reloaded when it changes (required)")
	fs.StringVar(&c.keyFile, "key", "", "PEM private key of --cert (required)")
	fs.StringVar(&c.cacheFile, "cache-file", "", "file that keeps the last bundle accepted, served after a restart while the upstream cannot be reached")
	fs.DurationVar(&c.poll, "poll", relay.DefaultPoll, fmt.Sprintf("interval between fetches from the upstream (%s to %s)", relay.MinPoll, relay.MaxPoll))
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.printVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.printVersion {
		fmt.Fprintln(os.Stdout, "meshroot-bundle", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshroot-bundle: unexpected argument %q: everything is a flag (see --help)\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		fmt.Fprintf(stderr, "meshroot-bundle: --log-level %q: use debug, info, warn or error\n", c.logLevel)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	rcfg, err := c.relayConfig(log)
	if err != nil {
		fmt.Fprintf(stderr, "meshroot-bundle: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if err := serve(ctx, c, rcfg, log); err != nil {
		fmt.Fprintf(stderr, "meshroot-bundle: %v\n", err)
		return 1
	}
	return 0
}

// usageError is a flag that is missing or malformed.
type usageError struct{ error }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// relayConfig checks the flags and reads the files they name.
func (c config) relayConfig(log *slog.Logger) (relay.Config, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--trust-domain", c.trustDomain}, {"--upstream", c.upstream}, {"--cert", c.certFile}, {"--key", c.keyFile}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return relay.Config{}, usageErrorf("missing %s (see --help)", strings.Join(missing, ", "))
	}
	td, err := spiffeid.TrustDomainFromString(c.trustDomain)
	if err != nil {
		return relay.Config{}, usageErrorf("--trust-domain %q: %v", c.trustDomain, err)
	}
	cfg := relay.Config{TrustDomain: td, URL: c.upstream, Poll: c.poll, CacheFile: c.cacheFile, Log: log}
	if c.upstreamCA != "" && (c.upstreamBundle != "" || c.upstreamID != "") {
		return relay.Config{}, usageErrorf("--upstream-ca is for an https_web upstream, --upstream-bundle and --upstream-id for an https_spiffe one: give one kind")
	}
	if c.upstreamCA != "" {
		pem, err := fsutil.ReadBounded(c.upstreamCA, bundle.MaxSize)
		if err != nil {
			return relay.Config{}, fmt.Errorf("--upstream-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return relay.Config{}, fmt.Errorf("--upstream-ca %s holds no PEM certificate", c.upstreamCA)
		}
		cfg.Roots = pool
	}
	if c.upstreamID != "" || c.upstreamBundle != "" {
		id := spiffeid.RequireFromPath(td, spiffe.BundleEndpointPath)
		if c.upstreamID != "" {
			if id, err = spiffeid.FromString(c.upstreamID); err != nil {
				return relay.Config{}, usageErrorf("--upstream-id %q: %v", c.upstreamID, err)
			}
		}
		cfg.EndpointID = id
		if c.upstreamBundle != "" {
			b, err := readBootstrap(td, c.upstreamBundle)
			if err != nil {
				return relay.Config{}, err
			}
			cfg.Bootstrap = b
		} else if c.cacheFile == "" {
			return relay.Config{}, usageErrorf("an https_spiffe upstream (--upstream-id) needs --upstream-bundle to authenticate it first")
		}
	}
	return cfg, nil
}

// readBootstrap reads the bootstrap bundle (document or PEM).
func readBootstrap(td spiffeid.TrustDomain, path string) (*spiffebundle.Bundle, error) {
	data, err := fsutil.ReadBounded(path, bundle.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("--upstream-bundle: %w", err)
	}
	b, err := bundle.Parse(td, data, bundle.Options{AllowPEM: true})
	if err != nil {
		return nil, fmt.Errorf("--upstream-bundle %s: %w", path, err)
	}
	return b, nil
}

// serve runs the relay and its endpoint until ctx ends.
func serve(ctx context.Context, c config, rcfg relay.Config, log *slog.Logger) error {
	r, err := relay.New(rcfg)
	if err != nil {
		return err
	}
	ep, err := spiffe.NewEndpoint(spiffe.EndpointConfig{
		Listen: c.listen, Profile: spiffe.ProfileWeb, CertFile: c.certFile, KeyFile: c.keyFile,
		Handler: spiffe.NewHandler(r.Bundle, 0, log), Log: log,
	})
	if err != nil {
		return err
	}
	log.Info("meshroot-bundle starting", "version", version, "bundle_endpoint", ep.Addr(), "trust_domain", rcfg.TrustDomain.String(), "upstream", rcfg.URL, "poll", rcfg.Poll.String())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	relayDone := make(chan error, 1)
	go func() { relayDone <- r.Run(ctx) }()
	err = ep.Run(ctx)
	cancel()
	<-relayDone
	return err
}
