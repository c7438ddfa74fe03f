// Package agentcmd builds the agent command, shared by `meshroot agent` and
// the lean meshroot-agent binary: one set of flags, one behaviour. It must
// not import the CA's key backends, stores or cloud SDKs (a test in
// cmd/meshroot-agent checks the lean binary's dependencies).
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/keys"
)

// UsageError marks a bad invocation (exit code 2).
type UsageError struct{ Err error }

// Error is the wrapped error's message.
func (e UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e UsageError) Unwrap() error { return e.Err }

// maxServerCAFile bounds the --server-ca file.
const maxServerCAFile = 1 << 20

type agentFlags struct {
	serverCA, cluster, joinToken, tokenFile        string
	kubeconfig, kubeContext, namespace, secretName string
	servers                                        []string
	format, keyType, restart, istiod               string
	metricsAddr                                    string
	out                                            string
	ttl, timeout, istiodStaleAfter                 time.Duration
	renewFraction                                  float64
	probe                                          agent.IstiodProbe
	once, adopt, meshConfig                        bool
}

// New returns the agent command; name is how it is invoked ("agent" under
// meshroot, "meshroot-agent" as its own binary). Its flags can also come
// from MESHROOT_<FLAG> variables (ApplyEnv).
func New(name string) *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   name + " --server HOST:PORT[,HOST:PORT...] --server-ca FILE --cluster NAME (--token-file F | --join-token T)",
		Short: "Keep this cluster's Istio cacerts Secret issued, renewed and following the trust bundle",
		Long: `Run in a cluster (a Job with --once for bootstrap, or a Deployment to keep
renewing). The intermediate key is generated here and never leaves the
cluster; the server signs a CSR. The cacerts Secret is written in one atomic
create or update. Renewal happens at 2/3 of the lifetime, presenting the
current intermediate; trust bundle changes are followed as they happen.
It reports its status to the server at least every 10 minutes. While the
server is unreachable nothing in the cluster changes.

With several server replicas (PostgreSQL, docs/ha.md), give each address
(repeat --server or separate them with commas), or one DNS name that
resolves to all of them (a headless Service): calls are spread over the
replicas that answer, and a broken trust bundle watch resumes on another. --metrics-addr serves
Prometheus metrics (docs/observability.md).

Without Kubernetes (trying meshroot out, or a VM that mounts the files),
--out DIR writes the same files into a folder instead of the Secret, the way
the kubelet updates a mounted Secret: a new hidden folder, then the ..data
symlink swapped to it in one rename.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return UsageError{fmt.Errorf("%s takes no arguments (got %d arguments)", cmd.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.servers, "server", nil, "meshroot server's Issuer address, host:port (required); repeat it or separate with commas for several replicas, or give one DNS name that resolves to all of them")
	fl.StringVar(&f.serverCA, "server-ca", "", "PEM file with the trust domain's roots, to verify the server (required)")
	fl.StringVar(&f.cluster, "cluster", "", "this cluster's registered name (required)")
	fl.StringVar(&f.joinToken, "join-token", "", "single-use join token (env MESHROOT_JOIN_TOKEN; prefer the variable: arguments are visible in ps)")
	fl.StringVar(&f.tokenFile, "token-file", "", "projected service-account token with audience meshroot")
	fl.StringVar(&f.out, "out", "", "write cacerts as files into this folder instead of a Secret (no Kubernetes needed; updated atomically, kubelet-style ..data swap)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)")
	fl.StringVar(&f.kubeContext, "context", "", "kubeconfig context")
	fl.StringVar(&f.namespace, "namespace", agent.DefaultSecret.Namespace, "namespace of the cacerts Secret and istiod")
	fl.StringVar(&f.secretName, "secret", agent.DefaultSecret.Name, "name of the cacerts Secret")
	fl.StringVar(&f.format, "format", string(ca.FormatIstio), "cacerts layout: istio or tls")
	fl.StringVar(&f.keyType, "key-type", string(keys.ECP256), "intermediate key type")
	fl.StringVar(&f.restart, "restart-istiod", string(agent.RestartAuto), "roll istiod after writing: auto, always or never")
	fl.StringVar(&f.istiod, "istiod-deployment", "istiod", "istiod's Deployment name")
	fl.StringVar(&f.probe.Addr, "istiod-probe", "", "confirm the intermediate istiod signs with by a probe CSR to its CA service at HOST:PORT (15012), with a TokenRequest token (audience istio-ca) for --istiod-probe-service-account (default: off, roots only)")
	fl.StringVar(&f.probe.ServiceAccount, "istiod-probe-service-account", "meshroot-agent", "the agent's own service account in --namespace, for the probe's token")
	fl.StringVar(&f.probe.ServerName, "istiod-probe-server-name", "", "name in istiod's serving certificate (default istiod.NAMESPACE.svc)")
	fl.DurationVar(&f.istiodStaleAfter, "istiod-stale-after", agent.DefaultIstiodStaleAfter, "report istiod stale when its istio-ca-root-cert still differs from the Secret this long after a write (with --restart-istiod auto, roll it once)")
	fl.DurationVar(&f.ttl, "ttl", 0, "requested intermediate lifetime (default: the server's)")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Minute, "with --once: give up after this long")
	fl.Float64Var(&f.renewFraction, "renew-fraction", 2.0/3, "renew after this fraction of the intermediate's lifetime (0 < f < 1)")
	fl.BoolVar(&f.once, "once", false, "make sure cacerts is current, then exit (for a Job)")
	fl.BoolVar(&f.adopt, "adopt", false, "replace a cacerts Secret that meshroot did not create")
	fl.BoolVar(&f.meshConfig, "mesh-config", false, "also keep a caCertificates entry per federated trust domain in the istio ConfigMap's mesh config")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. :9090 in a Pod or 127.0.0.1:9090 on a host (default: off)")
	return cmd
}

func runAgent(cmd *cobra.Command, f *agentFlags) error {
	for name, v := range map[string]string{"--server-ca": f.serverCA, "--cluster": f.cluster} {
		if v == "" {
			return UsageError{fmt.Errorf("%s is required", name)}
		}
	}
	if len(f.servers) == 0 {
		return UsageError{fmt.Errorf("--server is required")}
	}
	servers, err := agent.ParseServers(f.servers)
	if err != nil {
		return UsageError{fmt.Errorf("--server: %w", err)}
	}
	format, err := ca.ParseFormat(f.format)
	if err != nil {
		return UsageError{err}
	}
	kt, err := keys.ParseKeyType(f.keyType)
	if err != nil {
		return UsageError{err}
	}
	restart, err := agent.ParseRestartMode(f.restart)
	if err != nil {
		return UsageError{err}
	}
	if f.renewFraction <= 0 || f.renewFraction >= 1 {
		return UsageError{fmt.Errorf("--renew-fraction %v: use a number between 0 and 1", f.renewFraction)}
	}
	caPEM, err := fsutil.ReadBounded(f.serverCA, maxServerCAFile)
	if err != nil {
		return UsageError{fmt.Errorf("--server-ca: %w", err)}
	}
	kube, where, err := agentTarget(cmd, f)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	metrics, err := serveAgentMetrics(ctx, f.metricsAddr, f.cluster, log)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		Server: servers[0], Servers: servers[1:], ServerCA: caPEM, Cluster: f.cluster, JoinToken: f.joinToken, TokenFile: f.tokenFile,
		Kube: kube, Secret: agent.SecretRef{Namespace: f.namespace, Name: f.secretName}, Format: format, KeyType: kt,
		TTL: f.ttl, Restart: restart, IstiodDeployment: f.istiod, Adopt: f.adopt, Log: log, RenewFraction: f.renewFraction,
		MeshConfig: meshConfigName(f.meshConfig), Metrics: metrics, IstiodStaleAfter: f.istiodStaleAfter, Probe: f.probe,
		ReturnMemory: true, // the process runs this one agent
	})
	if err != nil {
		return UsageError{err}
	}
	defer a.Close()
	if f.once {
		ctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		if err := a.RunOnce(ctx); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "cacerts %s is current\n", where)
		return nil
	}
	return a.Run(ctx)
}

// agentTarget is where the agent writes: a folder (--out) or the cluster's
// cacerts Secret, and how to name it.
func agentTarget(cmd *cobra.Command, f *agentFlags) (kubeclient.Interface, string, error) {
	ref := agent.SecretRef{Namespace: f.namespace, Name: f.secretName}
	if f.out == "" {
		kube, err := KubeClient(f.kubeconfig, f.kubeContext)
		return kube, ref.Namespace + "/" + ref.Name, err
	}
	for _, name := range []string{"kubeconfig", "context", "mesh-config"} {
		if cmd.Flags().Changed(name) {
			return nil, "", UsageError{fmt.Errorf("--out writes files, not to a cluster: drop --%s", name)}
		}
	}
	kube, err := agent.NewFolder(f.out, ref)
	return kube, "in " + f.out, err
}

// KubeClient builds a client from a kubeconfig file and context, from the
// in-cluster config, or from the default kubeconfig locations.
func KubeClient(kubeconfig, kubeContext string) (kubeclient.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" && kubeContext == "" {
		if cfg, err = rest.InClusterConfig(); err == nil {
			return newKube(cfg)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		if _, serr := os.Stat(kubeconfig); serr != nil {
			return nil, UsageError{fmt.Errorf("--kubeconfig: %w", serr)}
		}
		rules.ExplicitPath = kubeconfig
	}
	cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		if errors.Is(err, clientcmd.ErrEmptyConfig) {
			return nil, UsageError{errors.New("no Kubernetes configuration: not in a cluster and no kubeconfig: pass --kubeconfig")}
		}
		return nil, UsageError{fmt.Errorf("kubeconfig: %w", err)}
	}
	return newKube(cfg)
}

// newKube is the agent's small Kubernetes client (not client-go's full
// clientset: see internal/kubeclient).
func newKube(cfg *rest.Config) (kubeclient.Interface, error) {
	c, err := kubeclient.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// meshConfigName is the ConfigMap istiod reads its mesh config from.
func meshConfigName(on bool) string {
	if on {
		return "istio"
	}
	return ""
}

// serveAgentMetrics serves the agent's metrics (and the Go runtime's) on
// addr until ctx ends; with no addr it serves nothing and returns nil.
func serveAgentMetrics(ctx context.Context, addr, cluster string, log *slog.Logger) (*agent.Metrics, error) {
	if addr == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := agent.NewMetrics(reg, cluster)
	if err != nil {
		return nil, err
	}
	srv, err := agent.ListenMetrics(addr, reg)
	if err != nil {
		return nil, UsageError{err}
	}
	log.Info("serving metrics", "url", "http://"+srv.Addr()+"/metrics")
	go func() {
		if err := srv.Serve(ctx); err != nil {
			log.Error("metrics endpoint stopped", "error", err)
		}
	}()
	return m, nil
}

// ApplyEnv sets every flag the user did not give from MESHROOT_<FLAG> in the
// environment (dashes become underscores).
func ApplyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := "MESHROOT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = UsageError{fmt.Errorf("environment %s=%q: %v", name, v, serr)}
			}
		}
	})
	return err
}
