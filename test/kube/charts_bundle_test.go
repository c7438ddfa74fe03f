package kube

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

const bundleChart = "meshroot-bundle"

// bundleValues are the values every meshroot-bundle render needs, with vals
// merged over them.
func bundleValues(vals map[string]any) map[string]any {
	out := map[string]any{
		"trustDomain": "mesh.example.com",
		"upstream":    map[string]any{"url": "https://meshroot.meshroot.svc:8444/", "bundleConfigMap": "meshroot-bootstrap-bundle"},
		"tls":         map[string]any{"secretName": "bundle-tls"},
	}
	for k, v := range vals {
		out[k] = v
	}
	return out
}

// flagValues returns the value after each --flag in args.
func flagValues(args []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "--") {
			m[args[i]] = args[i+1]
		}
	}
	return m
}

// TestBundleChart renders the edge bundle endpoint's chart: a hardened
// Deployment of meshroot-bundle without a service-account token, whose
// flags name the files its volumes mount, a readiness probe on its
// endpoint, a Service and a PodDisruptionBudget; and the values it refuses.
func TestBundleChart(t *testing.T) {
	r := render(t, bundleChart, "edge", bundleValues(nil))
	if want := []string{"Deployment", "PodDisruptionBudget", "Service"}; !slices.Equal(r.kinds(), want) {
		t.Errorf("kinds = %v, want %v", r.kinds(), want)
	}
	dep := one[appsv1.Deployment](t, r, "Deployment")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	checkHardened(t, "bundle", pod)
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the relay's pod mounts a service-account token it has no use for")
	}
	c := pod.Containers[0]
	flags := flagValues(c.Args)
	want := map[string]string{
		"--trust-domain":    "mesh.example.com",
		"--upstream":        "https://meshroot.meshroot.svc:8444/",
		"--upstream-bundle": "/etc/meshroot-bundle/upstream/bundle.json",
		"--cert":            "/etc/meshroot-bundle/tls/tls.crt",
		"--key":             "/etc/meshroot-bundle/tls/tls.key",
		"--listen":          ":8443",
		"--poll":            "5s",
		"--cache-file":      "/var/cache/meshroot-bundle/bundle.json",
	}
	for k, v := range want {
		if flags[k] != v {
			t.Errorf("%s = %q, want %q (args %q)", k, flags[k], v, c.Args)
		}
	}
	// Every file a flag names is in a mounted volume of the right source.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	if v := vols[mounts["/etc/meshroot-bundle/tls"]]; v.Secret == nil || v.Secret.SecretName != "bundle-tls" {
		t.Errorf("/etc/meshroot-bundle/tls is not the Secret bundle-tls: %+v", v)
	}
	if v := vols[mounts["/etc/meshroot-bundle/upstream"]]; v.ConfigMap == nil || v.ConfigMap.Name != "meshroot-bootstrap-bundle" ||
		len(v.ConfigMap.Items) != 1 || v.ConfigMap.Items[0].Path != "bundle.json" {
		t.Errorf("/etc/meshroot-bundle/upstream is not the bootstrap bundle's ConfigMap: %+v", v)
	}
	if v := vols[mounts["/var/cache/meshroot-bundle"]]; v.EmptyDir == nil {
		t.Errorf("the cache folder is not an emptyDir (the root filesystem is read-only): %+v", v)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/" || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.String() != "https" {
		t.Errorf("readiness probe = %+v, want GET / over HTTPS on port https", p)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "https" || c.Ports[0].ContainerPort != 8443 {
		t.Errorf("ports = %+v", c.Ports)
	}
	svc := one[corev1.Service](t, r, "Service")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.String() != "https" {
		t.Errorf("service ports = %+v", svc.Spec.Ports)
	}
	pdb := one[policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget")
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable = %v", pdb.Spec.MaxUnavailable)
	}

	t.Run("https_web upstream", func(t *testing.T) {
		r := render(t, bundleChart, "edge", bundleValues(map[string]any{
			"upstream":     map[string]any{"url": "https://meshroot.internal:8444/", "profile": "https_web", "caConfigMap": "internal-ca"},
			"replicaCount": 1,
		}))
		if want := []string{"Deployment", "Service"}; !slices.Equal(r.kinds(), want) {
			t.Errorf("kinds with one replica = %v, want %v", r.kinds(), want)
		}
		c := one[appsv1.Deployment](t, r, "Deployment").Spec.Template.Spec.Containers[0]
		flags := flagValues(c.Args)
		if flags["--upstream-ca"] != "/etc/meshroot-bundle/upstream/ca.crt" {
			t.Errorf("--upstream-ca = %q (args %q)", flags["--upstream-ca"], c.Args)
		}
		if _, ok := flags["--upstream-bundle"]; ok {
			t.Errorf("an https_web upstream got --upstream-bundle: %q", c.Args)
		}
	})

	t.Run("refused values", func(t *testing.T) {
		for _, tc := range []struct {
			vals map[string]any
			msg  string
		}{
			{map[string]any{"trustDomain": ""}, "trustDomain is required"},
			{map[string]any{"upstream": map[string]any{"url": ""}}, "upstream.url"},
			{map[string]any{"upstream": map[string]any{"url": "http://meshroot:8444/", "bundleConfigMap": "b"}}, "must be https://"},
			{map[string]any{"tls": map[string]any{"secretName": ""}}, "tls.secretName"},
			{map[string]any{"upstream": map[string]any{"url": "https://m/", "bundleConfigMap": ""}}, "bundleConfigMap"},
			{map[string]any{"upstream": map[string]any{"url": "https://m/", "profile": "https_web", "bundleConfigMap": "b"}}, "are for an https_spiffe upstream"},
			{map[string]any{"upstream": map[string]any{"url": "https://m/", "profile": "plain"}}, "must be https_spiffe or https_web"},
		} {
			if _, err := renderErr(bundleChart, "edge", bundleValues(tc.vals)); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("values %v: %v, want an error containing %q", tc.vals, err, tc.msg)
			}
		}
	})
}
