package kube

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// haValues are the server chart's values for HA mode (PostgreSQL) with
// disk keys from a Secret, plus extra.
func haValues(extra map[string]any) map[string]any {
	v := map[string]any{
		"store": map[string]any{"type": "postgres", "postgres": map[string]any{"existingSecret": "meshroot-db"}},
		"keys":  map[string]any{"existingSecret": "meshroot-root-keys"},
	}
	maps.Copy(v, extra)
	return v
}

// In PostgreSQL mode the server chart runs 3 replicas with a
// PodDisruptionBudget, anti-affinity and rolling updates, reads the
// database URL and the root keys from Secrets mounted as files, has no
// PVC, and adds a headless Service whose name is in the server
// certificate. In SQLite mode it refuses more than one replica.
func TestServerChartHA(t *testing.T) {
	r := render(t, serverChart, "meshroot", haValues(nil))
	if want := []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"}; !slices.Equal(r.kinds(), want) {
		t.Errorf("kinds = %v, want %v (no PersistentVolumeClaim)", r.kinds(), want)
	}
	dep := one[appsv1.Deployment](t, r, "Deployment")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", dep.Spec.Replicas)
	}
	if s := dep.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("strategy = %+v, want RollingUpdate with maxUnavailable 1", s)
	}
	pod := dep.Spec.Template.Spec
	checkHardened(t, "server", pod)
	podLabels := labels.Set(dep.Spec.Template.Labels)

	pdb := one[policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget")
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget spec = %+v, want maxUnavailable 1", pdb.Spec)
	}
	if sel := labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels); len(pdb.Spec.Selector.MatchLabels) == 0 || !sel.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods %v", pdb.Spec.Selector, podLabels)
	}

	aff := pod.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Fatalf("affinity = %+v, want one preferred pod anti-affinity term", aff)
	}
	term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" || !labels.SelectorFromSet(term.LabelSelector.MatchLabels).Matches(podLabels) {
		t.Errorf("anti-affinity term = %+v: want hostname spreading of these pods", term)
	}

	c := pod.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
		if v.PersistentVolumeClaim != nil {
			t.Errorf("volume %s is a PVC in PostgreSQL mode", v.Name)
		}
	}
	if v := vols[mounts["/var/lib/meshroot"]]; v.EmptyDir == nil {
		t.Errorf("data dir is %+v, want an emptyDir", v)
	}
	var cfg struct {
		StoreFile string `json:"storeFile"`
		Keys      struct {
			Create string `json:"create"`
			Dir    string `json:"dir"`
		} `json:"keys"`
		PassphraseFile string   `json:"passphraseFile"`
		ServerSANs     []string `json:"serverSANs"`
	}
	cm := one[corev1.ConfigMap](t, r, "ConfigMap")
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	secretFile := func(what, path, secret, key string) {
		t.Helper()
		i := strings.LastIndex(path, "/")
		if i < 0 {
			t.Fatalf("%s %q is not a path", what, path)
		}
		v := vols[mounts[path[:i]]]
		if v.Secret == nil || v.Secret.SecretName != secret || (key != "" && (len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != key || v.Secret.Items[0].Path != path[i+1:])) {
			t.Errorf("%s %q is not from Secret %s key %q: %+v", what, path, secret, key, v)
		}
	}
	secretFile("storeFile", cfg.StoreFile, "meshroot-db", "dsn")
	secretFile("keys.dir", cfg.Keys.Dir+"/x", "meshroot-root-keys", "")
	if v := vols[mounts[cfg.Keys.Dir]]; v.Secret == nil || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 {
		t.Errorf("key Secret volume %+v: want defaultMode 0440 (root-owned, read by the pod's fsGroup; never others)", v)
	}
	secretFile("passphraseFile", cfg.PassphraseFile, "meshroot-passphrase", "passphrase")
	if strings.HasPrefix(cfg.Keys.Dir, "/var/lib/meshroot") {
		t.Errorf("keys.dir %s is inside the data dir: the server refuses that in HA mode", cfg.Keys.Dir)
	}

	var headless *corev1.Service
	for _, o := range r.objs {
		if o.GetKind() == "Service" && o.GetName() == "meshroot-replicas" {
			headless = oneObj[corev1.Service](t, o)
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !labels.SelectorFromSet(headless.Spec.Selector).Matches(podLabels) ||
		len(headless.Spec.Ports) != 1 || headless.Spec.Ports[0].Port != 8443 {
		t.Errorf("headless Service = %+v, want clusterIP None over the pods, port 8443", headless)
	}
	if !slices.Contains(cfg.ServerSANs, "meshroot-replicas.meshroot.svc") {
		t.Errorf("serverSANs %v lack the headless Service's name agents dial", cfg.ServerSANs)
	}
	if !strings.Contains(r.notes, "meshroot-replicas.meshroot.svc:8443") || strings.Contains(r.notes, "data volume") {
		t.Errorf("NOTES in HA mode:\n%s", r.notes)
	}

	t.Run("hard anti-affinity, KMS keys, 5 replicas", func(t *testing.T) {
		r := render(t, serverChart, "meshroot", haValues(map[string]any{
			"podAntiAffinity": "hard", "replicaCount": 5,
			"keys": map[string]any{"create": "vault-transit://transit"},
		}))
		dep := one[appsv1.Deployment](t, r, "Deployment")
		if *dep.Spec.Replicas != 5 {
			t.Errorf("replicas = %d, want 5", *dep.Spec.Replicas)
		}
		aff := dep.Spec.Template.Spec.Affinity
		if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
			t.Errorf("affinity = %+v, want a required anti-affinity term", aff)
		}
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Name == "keys" {
				t.Errorf("a key Secret volume without keys.existingSecret")
			}
		}
		if conf := one[corev1.ConfigMap](t, r, "ConfigMap").Data["config.yaml"]; !strings.Contains(conf, `create: "vault-transit://transit"`) || strings.Contains(conf, "dir:") {
			t.Errorf("config.yaml:\n%s", conf)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			vals map[string]any
			want string
		}{
			{"SQLite with 3 replicas", map[string]any{"replicaCount": 3}, "store.type postgres"},
			{"SQLite with 2 replicas", map[string]any{"replicaCount": 2, "store": map[string]any{"type": "sqlite"}}, "single writer"},
			{"unknown store", map[string]any{"store": map[string]any{"type": "mysql"}}, `store.type "mysql"`},
			{"PostgreSQL without the URL Secret", map[string]any{"store": map[string]any{"type": "postgres"}, "keys": map[string]any{"create": "vault-transit://transit"}}, "store.postgres.existingSecret"},
			{"PostgreSQL with disk keys in each pod", haValues(map[string]any{"keys": map[string]any{"create": "disk"}}), "every replica must hold the root keys"},
			{"key Secret without passphrase", haValues(map[string]any{"passphrase": map[string]any{"existingSecret": ""}}), "passphrase.existingSecret"},
			{"bad anti-affinity", haValues(map[string]any{"podAntiAffinity": "maybe"}), `podAntiAffinity "maybe"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := renderErr(serverChart, "meshroot", tc.vals)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("render = %v, want an error mentioning %q", err, tc.want)
				}
			})
		}
	})

	t.Run("SQLite stays one replica with its PVC", func(t *testing.T) {
		r := render(t, serverChart, "meshroot", map[string]any{"replicaCount": 1})
		dep := one[appsv1.Deployment](t, r, "Deployment")
		if *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || dep.Spec.Template.Spec.Affinity != nil {
			t.Errorf("SQLite deployment: replicas %d, strategy %s, affinity %+v", *dep.Spec.Replicas, dep.Spec.Strategy.Type, dep.Spec.Template.Spec.Affinity)
		}
		one[corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim")
	})

	t.Run("lint", func(t *testing.T) {
		l := action.NewLint()
		l.Namespace = releaseNS
		l.Strict = true
		res := l.Run([]string{chartPath(serverChart)}, haValues(nil))
		for _, err := range res.Errors {
			t.Errorf("helm lint (HA): %v", err)
		}
	})
}

// oneObj converts the rendered object o to T.
func oneObj[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s %s does not convert to %T: %v", o.GetKind(), o.GetName(), out, err)
	}
	return out
}
