// Tests of the Helm charts in deploy/charts: rendered with the Helm SDK,
// linted, checked object by object, and sent to a real kube-apiserver with
// server-side dry-run (strict field validation and the restricted Pod
// Security Standard).
package kube

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// TestMain runs the tests with their clusters reused from test to test
// (kubeenv.Main): a cluster a test started is reset and handed to the next
// one instead of a new etcd and apiserver each time.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(kubeenv.Main(m))
}

const (
	serverChart = "meshroot"
	agentChart  = "meshroot-agent"
	releaseNS   = "meshroot"
	istioNS     = "istio-system"
)

func chartPath(name string) string { return filepath.Join("..", "..", "deploy", "charts", name) }

type rendered struct {
	objs  []*unstructured.Unstructured
	notes string
}

// render renders a chart as `helm install --dry-run` without a cluster would.
func render(t *testing.T, chart, release string, vals map[string]any) rendered {
	t.Helper()
	r, err := renderErr(chart, release, vals)
	if err != nil {
		t.Fatalf("rendering %s with %v: %v", chart, vals, err)
	}
	return r
}

func renderErr(chart, release string, vals map[string]any) (rendered, error) {
	ch, err := loader.Load(chartPath(chart))
	if err != nil {
		return rendered{}, err
	}
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	inst := action.NewInstall(cfg)
	inst.DryRun = true
	inst.ClientOnly = true
	inst.ReleaseName = release
	inst.Namespace = releaseNS
	kv, err := chartutil.ParseKubeVersion(kubeenv.KubeVersion)
	if err != nil {
		return rendered{}, err
	}
	inst.KubeVersion = kv
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return rendered{}, err
	}
	var out rendered
	out.notes = rel.Info.Notes
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(rel.Manifest), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return rendered{}, err
		}
		if len(m) == 0 {
			continue
		}
		out.objs = append(out.objs, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

func (r rendered) kinds() []string {
	var ks []string
	for _, o := range r.objs {
		ks = append(ks, o.GetKind())
	}
	slices.Sort(ks)
	return ks
}

// one returns the single object of kind, converted to out.
func one[T any](t *testing.T, r rendered, kind string) *T {
	t.Helper()
	var found *unstructured.Unstructured
	for _, o := range r.objs {
		if o.GetKind() == kind {
			if found != nil {
				t.Fatalf("more than one %s", kind)
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("no %s rendered (have %v)", kind, r.kinds())
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(found.Object, out, true); err != nil {
		t.Fatalf("%s does not convert to %T: %v", kind, out, err)
	}
	return out
}

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		chart string
		vals  map[string]any
	}{
		{serverChart, nil},
		{serverChart, map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "tokenReview": map[string]any{"enabled": true}}},
		{agentChart, nil},
		{agentChart, map[string]any{"mode": "deployment"}},
		{bundleChart, bundleValues(nil)},
		{bundleChart, bundleValues(map[string]any{"upstream": map[string]any{"url": "https://m:8444/", "profile": "https_web"}})},
	} {
		l := action.NewLint()
		l.Namespace = releaseNS
		l.Strict = true
		res := l.Run([]string{chartPath(tc.chart)}, tc.vals)
		for _, err := range res.Errors {
			t.Errorf("helm lint %s %v: %v", tc.chart, tc.vals, err)
		}
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint %s %v: %s", tc.chart, tc.vals, m)
			}
		}
		if res.TotalChartsLinted != 1 {
			t.Errorf("helm lint %s linted %d charts", tc.chart, res.TotalChartsLinted)
		}
	}
}

func TestServerChart(t *testing.T) {
	r := render(t, serverChart, "meshroot", nil)
	if want := []string{"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount"}; !slices.Equal(r.kinds(), want) {
		t.Errorf("kinds = %v, want %v", r.kinds(), want)
	}

	dep := one[appsv1.Deployment](t, r, "Deployment")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	checkHardened(t, "server", pod)
	c := pod.Containers[0]
	if want := []string{"serve", "--config", "/etc/meshroot/config.yaml"}; !slices.Equal(c.Args, want) {
		t.Errorf("args = %q, want %q", c.Args, want)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 8443 || ports["http"] != 8080 {
		t.Errorf("container ports = %v, want grpc 8443, http 8080", ports)
	}
	for name, probe := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != name || probe.HTTPGet.Port.String() != "http" {
			t.Errorf("probe %s = %+v, want httpGet %s on port http", name, probe, name)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	pvc := one[corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim")
	if v := vols[mounts["/var/lib/meshroot"]]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("/var/lib/meshroot is not the PVC %s: %+v", pvc.Name, v)
	}
	if got := pvc.Spec.Resources.Requests.Storage().String(); got != "1Gi" {
		t.Errorf("PVC size = %s, want 1Gi", got)
	}
	if pvc.Spec.StorageClassName != nil {
		t.Errorf("PVC storageClassName = %q, want unset (the default class)", *pvc.Spec.StorageClassName)
	}
	cm := one[corev1.ConfigMap](t, r, "ConfigMap")
	if v := vols[mounts["/etc/meshroot"]]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("/etc/meshroot is not the ConfigMap %s: %+v", cm.Name, v)
	}

	var cfg struct {
		TrustDomain    string   `json:"trustDomain"`
		Listen         string   `json:"listen"`
		HTTPListen     string   `json:"httpListen"`
		DataDir        string   `json:"dataDir"`
		ServerSANs     []string `json:"serverSANs"`
		PassphraseFile string   `json:"passphraseFile"`
		Policy         struct {
			DefaultTTL string `json:"defaultTTL"`
			MaxTTL     string `json:"maxTTL"`
		} `json:"policy"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("config.yaml: %v\n%s", err, cm.Data["config.yaml"])
	}
	if cfg.TrustDomain != "example.org" || cfg.Listen != ":8443" || cfg.HTTPListen != ":8080" || cfg.DataDir != "/var/lib/meshroot" ||
		cfg.Policy.DefaultTTL != "8760h" || cfg.Policy.MaxTTL != "17520h" {
		t.Errorf("config.yaml = %+v", cfg)
	}
	if !slices.Contains(cfg.ServerSANs, "meshroot.meshroot.svc") || !slices.Contains(cfg.ServerSANs, "meshroot.meshroot.svc.cluster.local") {
		t.Errorf("serverSANs = %v, want the Service's DNS names", cfg.ServerSANs)
	}
	// The passphrase is a file from the existing Secret, named in the config.
	dir, file := filepath.Split(cfg.PassphraseFile)
	pv := vols[mounts[strings.TrimSuffix(dir, "/")]]
	if pv.Secret == nil || pv.Secret.SecretName != "meshroot-passphrase" || len(pv.Secret.Items) != 1 ||
		pv.Secret.Items[0].Key != "passphrase" || pv.Secret.Items[0].Path != file {
		t.Errorf("passphraseFile %q is not the Secret meshroot-passphrase key passphrase: %+v", cfg.PassphraseFile, pv)
	}

	svc := one[corev1.Service](t, r, "Service")
	sports := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		sports[p.Name] = p.Port
	}
	if sports["grpc"] != 8443 || sports["http"] != 8080 {
		t.Errorf("service ports = %v", sports)
	}
	if !strings.Contains(r.notes, "meshroot-passphrase") {
		t.Errorf("NOTES do not mention the passphrase Secret:\n%s", r.notes)
	}

	t.Run("values", func(t *testing.T) {
		r := render(t, serverChart, "ca", map[string]any{
			"config": map[string]any{
				"trustDomain": "mesh.example.com",
				"serverSANs":  []any{"meshroot.example.com"},
				"policy":      map[string]any{"defaultTTL": "720h", "maxTTL": "1440h"},
			},
			"passphrase":  map[string]any{"existingSecret": ""},
			"persistence": map[string]any{"size": "5Gi", "storageClass": "fast-ssd"},
		})
		pvc := one[corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim")
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast-ssd" || pvc.Spec.Resources.Requests.Storage().String() != "5Gi" {
			t.Errorf("PVC spec = %+v", pvc.Spec)
		}
		conf := one[corev1.ConfigMap](t, r, "ConfigMap").Data["config.yaml"]
		for _, want := range []string{`"mesh.example.com"`, "- meshroot.example.com", "- ca-meshroot.meshroot.svc", `defaultTTL: "720h"`, `maxTTL: "1440h"`} {
			if !strings.Contains(conf, want) {
				t.Errorf("config.yaml lacks %s:\n%s", want, conf)
			}
		}
		if strings.Contains(conf, "passphraseFile") {
			t.Errorf("config.yaml names a passphrase file without a Secret:\n%s", conf)
		}
		for _, v := range one[appsv1.Deployment](t, r, "Deployment").Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				t.Errorf("secret volume %s without passphrase.existingSecret", v.Name)
			}
		}
	})

	t.Run("serviceMonitor", func(t *testing.T) {
		r := render(t, serverChart, "meshroot", map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}})
		var sm *unstructured.Unstructured
		for _, o := range r.objs {
			if o.GetKind() == "ServiceMonitor" {
				sm = o
			}
		}
		if sm == nil || sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetLabels()["release"] != "prom" {
			t.Fatalf("ServiceMonitor = %v", sm)
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 || eps[0].(map[string]any)["port"] != "http" || eps[0].(map[string]any)["path"] != "/metrics" {
			t.Errorf("ServiceMonitor endpoints = %v", eps)
		}
	})
}

func TestAgentChart(t *testing.T) {
	for _, mode := range []string{"", "job", "deployment"} {
		t.Run("mode="+mode, func(t *testing.T) {
			var vals map[string]any
			if mode != "" {
				vals = map[string]any{"mode": mode, "cluster": "east"}
			}
			r := render(t, agentChart, "meshroot-agent", vals)
			workload := "Job"
			if mode == "deployment" {
				workload = "Deployment"
			}
			want := []string{workload, "Role", "RoleBinding", "ServiceAccount"}
			slices.Sort(want)
			if !slices.Equal(r.kinds(), want) {
				t.Fatalf("kinds = %v, want %v", r.kinds(), want)
			}
			var pod corev1.PodSpec
			if workload == "Job" {
				job := one[batchv1.Job](t, r, "Job")
				pod = job.Spec.Template.Spec
				if pod.RestartPolicy != corev1.RestartPolicyOnFailure {
					t.Errorf("job restartPolicy = %s", pod.RestartPolicy)
				}
			} else {
				dep := one[appsv1.Deployment](t, r, "Deployment")
				pod = dep.Spec.Template.Spec
				if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
					t.Errorf("replicas = %v, want 1", dep.Spec.Replicas)
				}
			}
			checkHardened(t, "agent", pod)
			sa := one[corev1.ServiceAccount](t, r, "ServiceAccount")
			if pod.ServiceAccountName != sa.Name {
				t.Errorf("pod runs as %q, chart creates ServiceAccount %q", pod.ServiceAccountName, sa.Name)
			}

			cluster := "meshroot-agent" // the release name, by default
			if mode != "" {
				cluster = "east"
			}
			wantArgs := []string{"--server", "meshroot.meshroot.svc:8443",
				"--server-ca", "/etc/meshroot-agent/server-ca/ca.crt", "--cluster", cluster,
				"--token-file", "/var/run/secrets/meshroot/token", "--namespace", "istio-system",
				"--restart-istiod", "auto"}
			if workload == "Job" {
				wantArgs = append(wantArgs, "--once")
			}
			c := pod.Containers[0]
			// The lean agent image and binary, not the server's.
			if !slices.Equal(c.Command, []string{"/meshroot-agent"}) || !strings.HasPrefix(c.Image, "ghcr.io/meshroot/meshroot-agent:") {
				t.Errorf("container runs %q from %q, want /meshroot-agent from ghcr.io/meshroot/meshroot-agent", c.Command, c.Image)
			}
			if !slices.Equal(c.Args, wantArgs) {
				t.Errorf("args = %q\nwant   %q", c.Args, wantArgs)
			}

			// The token file is a projected token for the meshroot audience,
			// and the server CA comes from the ConfigMap.
			vols := map[string]corev1.Volume{}
			for _, v := range pod.Volumes {
				vols[v.Name] = v
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			tv := vols[mounts["/var/run/secrets/meshroot"]]
			if tv.Projected == nil || len(tv.Projected.Sources) != 1 || tv.Projected.Sources[0].ServiceAccountToken == nil {
				t.Fatalf("/var/run/secrets/meshroot is not a projected token: %+v", tv)
			}
			if sat := tv.Projected.Sources[0].ServiceAccountToken; sat.Audience != "meshroot" || sat.Path != "token" ||
				sat.ExpirationSeconds == nil || *sat.ExpirationSeconds != 3600 {
				t.Errorf("projected token = audience %q path %q expiration %v, want meshroot, token, 3600", sat.Audience, sat.Path, sat.ExpirationSeconds)
			}
			cv := vols[mounts["/etc/meshroot-agent/server-ca"]]
			if cv.ConfigMap == nil || cv.ConfigMap.Name != "meshroot-server-ca" || len(cv.ConfigMap.Items) != 1 || cv.ConfigMap.Items[0].Path != "ca.crt" {
				t.Errorf("server CA volume = %+v", cv)
			}

			role := one[rbacv1.Role](t, r, "Role")
			if role.Namespace != istioNS {
				t.Errorf("Role in namespace %q, want %s", role.Namespace, istioNS)
			}
			checkRules(t, role.Rules)
			rb := one[rbacv1.RoleBinding](t, r, "RoleBinding")
			if rb.Namespace != istioNS || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name ||
				len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa.Name || rb.Subjects[0].Namespace != releaseNS {
				t.Errorf("RoleBinding = %+v", rb)
			}
		})
	}

	t.Run("refused values", func(t *testing.T) {
		for _, tc := range []struct {
			vals map[string]any
			msg  string
		}{
			{map[string]any{"mode": "daemonset"}, "mode must be job or deployment"},
			{map[string]any{"restartIstiod": "sometimes"}, "restartIstiod must be auto, always or never"},
		} {
			if _, err := renderErr(agentChart, "a", tc.vals); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%v: %v, want an error with %q", tc.vals, err, tc.msg)
			}
		}
	})
}

// checkRules asserts the agent's Role grants exactly what it needs, by name
// wherever Kubernetes can restrict by name (create it cannot).
func checkRules(t *testing.T, rules []rbacv1.PolicyRule) {
	t.Helper()
	type key struct{ group, resource, verb string }
	got := map[key][]string{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					k := key{g, res, v}
					if _, dup := got[k]; dup {
						t.Errorf("%v granted twice", k)
					}
					got[k] = slices.Sorted(slices.Values(r.ResourceNames))
				}
			}
		}
	}
	want := map[key][]string{
		{"", "secrets", "get"}:           {"cacerts"},
		{"", "secrets", "update"}:        {"cacerts"},
		{"", "secrets", "patch"}:         {"cacerts"},
		{"", "secrets", "create"}:        nil,
		{"apps", "deployments", "get"}:   {"istiod"},
		{"apps", "deployments", "patch"}: {"istiod"},
		{"", "configmaps", "get"}:        {"istio", "istio-ca-root-cert", "meshroot-federated-bundles"},
		{"", "configmaps", "update"}:     {"istio", "meshroot-federated-bundles"},
		{"", "configmaps", "patch"}:      {"istio", "meshroot-federated-bundles"},
		{"", "configmaps", "create"}:     nil,
	}
	for k, names := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("Role lacks %v", k)
		} else if !slices.Equal(g, names) {
			t.Errorf("Role %v on names %v, want %v", k, g, names)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("Role grants %v, which the agent does not need", k)
		}
	}
}

// checkHardened asserts no container runs as root or keeps privileges.
func checkHardened(t *testing.T, what string, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || (psc.RunAsUser != nil && *psc.RunAsUser == 0) {
		t.Errorf("%s pod securityContext %+v: want runAsNonRoot and a non-zero user", what, psc)
	}
	if psc != nil && (psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
		t.Errorf("%s pod seccompProfile = %+v, want RuntimeDefault", what, psc.SeccompProfile)
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s container %s has no securityContext", what, c.Name)
		case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot, sc.RunAsUser != nil && *sc.RunAsUser == 0:
			t.Errorf("%s container %s may run as root", what, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s container %s allows privilege escalation", what, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s container %s has a writable root filesystem", what, c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s container %s is privileged", what, c.Name)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s container %s keeps capabilities: %+v", what, c.Name, sc.Capabilities)
		}
	}
}

// TestChartsServerDryRun sends every rendered object to a real apiserver
// with server-side dry-run: create and server-side apply, strict field
// validation, into namespaces that warn on the restricted Pod Security
// Standard (any warning fails the test).
func TestChartsServerDryRun(t *testing.T) {
	c := kubeenv.Start(t, "charts")
	for _, ns := range []string{releaseNS, istioNS} {
		c.EnsureNamespace(t, ns)
		labelRestricted(t, c.Client, ns)
	}
	a := newApplier(t, c.Config)

	cases := []struct {
		chart, release string
		vals           map[string]any
	}{
		{serverChart, "meshroot", nil},
		{serverChart, "tuned", map[string]any{
			"tokenReview": map[string]any{"enabled": true},
			"passphrase":  map[string]any{"existingSecret": ""},
			"persistence": map[string]any{"storageClass": "-", "size": "2Gi"},
		}},
		{serverChart, "remote-admin", map[string]any{"config": map[string]any{"adminListen": ":9443"}}},
		{serverChart, "ha", haValues(map[string]any{"podAntiAffinity": "hard"})},
		{agentChart, "agent-job", map[string]any{"mode": "job"}},
		{agentChart, "agent-deploy", map[string]any{"mode": "deployment", "cluster": "east"}},
		{bundleChart, "edge", bundleValues(nil)},
	}
	for _, tc := range cases {
		r := render(t, tc.chart, tc.release, tc.vals)
		for _, o := range r.objs {
			for _, err := range a.apply(o) {
				t.Errorf("%s %v: %s %s/%s: %v", tc.chart, tc.vals, o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
	}

	// The Pod Security check is live: a container that may escalate its
	// privileges draws a warning.
	r := render(t, agentChart, "weak", map[string]any{"securityContext": map[string]any{"allowPrivilegeEscalation": true}})
	var warned bool
	for _, o := range r.objs {
		if o.GetKind() == "Job" {
			errs := a.apply(o)
			warned = len(errs) > 0 && strings.Contains(errors.Join(errs...).Error(), "allowPrivilegeEscalation")
		}
	}
	if !warned {
		t.Error("a Job allowing privilege escalation drew no restricted Pod Security warning")
	}
}

func labelRestricted(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	patch := []byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"restricted","pod-security.kubernetes.io/warn":"restricted"}}}`)
	if _, err := cs.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

type applier struct {
	dyn      dynamic.Interface
	mapper   meta.RESTMapper
	warnings *warningRecorder
}

type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

func newApplier(t *testing.T, base *rest.Config) *applier {
	t.Helper()
	cfg := rest.CopyConfig(base)
	w := &warningRecorder{}
	cfg.WarningHandler = w
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), warnings: w}
}

// apply dry-runs o twice, as a create and as a server-side apply, and
// returns the errors and warnings.
func (a *applier) apply(o *unstructured.Unstructured) []error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return []error{err}
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			return []error{errors.New("namespaced object without metadata.namespace")}
		}
		ri = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	ctx := context.Background()
	var errs []error
	a.warnings.take()
	if _, err := ri.Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
		errs = append(errs, err)
	}
	data, err := o.MarshalJSON()
	if err != nil {
		return append(errs, err)
	}
	force := true
	if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
		DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict", FieldManager: "charts-test", Force: &force,
	}); err != nil {
		errs = append(errs, err)
	}
	for _, w := range a.warnings.take() {
		errs = append(errs, errors.New("warning: "+w))
	}
	if len(errs) > 0 && apierrors.IsNotFound(errs[0]) {
		errs = append(errs, errors.New("(does the namespace exist?)"))
	}
	return errs
}
