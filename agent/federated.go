package agent

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/internal/kubeclient"
)

// FederatedConfigMap holds, one key per foreign trust domain, the PEM roots
// of the trust domains this one federates with.
const FederatedConfigMap = "meshroot-federated-bundles"

// AnnotationMeshConfigTrustDomains records on the istio ConfigMap which
// caCertificates entries meshroot manages, so that it never touches others.
const AnnotationMeshConfigTrustDomains = "meshroot.io/mesh-config-trust-domains"

// What the agent writes into the mesh is bounded: Kubernetes refuses an
// object over 1 MiB (and etcd a request over 1.5 MiB), and a refused
// write must never stand between the agent and its status report.
const (
	// MaxFederatedBytes caps the PEM of all federated trust domains
	// together. The same roots go into the federated ConfigMap and into
	// the mesh config, so each object keeps about half its room for the
	// rest. The server already refuses a single trust domain whose roots
	// are over 256 KiB (bundle.MaxRootsPEM).
	MaxFederatedBytes = 512 << 10
	// maxMeshConfigBytes caps the istio ConfigMap's data after meshroot's
	// edit, well under Kubernetes' 1 MiB.
	maxMeshConfigBytes = 900 << 10
	// defaultMeshTrustDomain is Istio's trust domain when the mesh config
	// names none.
	defaultMeshTrustDomain = "cluster.local"
)

// AnnotationFederatedSkipped, on the federated ConfigMap, lists the
// federated trust domains the agent did not write, each with the reason
// ("big.example: over the 524288-byte budget ...; mine.example: ...").
const AnnotationFederatedSkipped = "meshroot.io/skipped-trust-domains"

// federatedSet is what the agent writes into the mesh: trust domain -> PEM
// roots, and trust domain -> why it was skipped.
type federatedSet struct {
	PEM     map[string]string
	Skipped map[string]string
}

// selectFederated turns the federated bundles into PEM per trust domain.
// It skips, recording why: a trust domain in own (a federated entry for
// our own trust domain would let a foreign bundle vouch for our workloads,
// whatever the server says), a name that is no ConfigMap key, a bundle
// with an unreadable root, and, smallest bundles first, whatever does not
// fit in MaxFederatedBytes.
func selectFederated(own []string, fed []*meshrootv1.FederatedBundle) federatedSet {
	set := federatedSet{PEM: map[string]string{}, Skipped: map[string]string{}}
	type candidate struct{ td, pem string }
	var cands []candidate
	seen := map[string]bool{}
	for _, f := range fed {
		td := f.GetTrustDomain()
		if seen[td] {
			continue
		}
		seen[td] = true
		if slices.Contains(own, td) {
			set.Skipped[td] = "this mesh's own trust domain: a federated bundle may not supply its roots"
			continue
		}
		if len(validation.IsConfigMapKey(td)) > 0 {
			set.Skipped[fmt.Sprintf("%.64q", td)] = "not a valid trust domain name"
			continue
		}
		var b strings.Builder
		for _, der := range f.GetRoots() {
			if _, err := x509.ParseCertificate(der); err != nil {
				set.Skipped[td] = "unreadable root: " + err.Error()
				b.Reset()
				break
			}
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		if b.Len() > 0 {
			cands = append(cands, candidate{td, b.String()})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if c := cmp.Compare(len(a.pem), len(b.pem)); c != 0 {
			return c
		}
		return cmp.Compare(a.td, b.td)
	})
	total := 0
	for _, c := range cands {
		if total+len(c.pem) > MaxFederatedBytes {
			set.Skipped[c.td] = fmt.Sprintf("%d bytes of PEM roots do not fit the %d-byte budget for federated bundles (%d used)", len(c.pem), MaxFederatedBytes, total)
			continue
		}
		total += len(c.pem)
		set.PEM[c.td] = c.pem
	}
	return set
}

// skippedAnnotation renders set.Skipped for AnnotationFederatedSkipped
// ("" when nothing was skipped).
func (set federatedSet) skippedAnnotation() string {
	var parts []string
	for _, td := range slices.Sorted(maps.Keys(set.Skipped)) {
		parts = append(parts, td+": "+set.Skipped[td])
	}
	return strings.Join(parts, "; ")
}

// deliverFederated writes the federated bundles into the cluster: the
// federated ConfigMap and, with MeshConfig, the mesh config's
// caCertificates. Trust domains it skips are logged at warning level and
// listed on the ConfigMap (AnnotationFederatedSkipped).
func (a *Agent) deliverFederated(ctx context.Context, bundle *meshrootv1.TrustBundle) error {
	own := []string{bundle.GetTrustDomain()}
	if a.cfg.MeshConfig != "" {
		td, err := meshTrustDomain(ctx, a.cfg.Kube, a.cfg.Secret.Namespace, a.cfg.MeshConfig)
		if err != nil {
			return err
		}
		own = append(own, td)
	}
	set := selectFederated(own, bundle.GetFederated())
	if len(set.Skipped) > 0 {
		a.log.Warn("federated bundles skipped: not written into the mesh", "skipped", set.skippedAnnotation(), "configmap", a.cfg.Secret.Namespace+"/"+FederatedConfigMap)
	}
	if wrote, err := writeFederatedConfigMap(ctx, a.cfg.Kube, a.cfg.Secret.Namespace, set); err != nil {
		return err
	} else if wrote {
		a.log.Info("federated bundles written", "configmap", a.cfg.Secret.Namespace+"/"+FederatedConfigMap, "trust_domains", len(set.PEM), "skipped", len(set.Skipped))
	}
	if a.cfg.MeshConfig != "" {
		if wrote, err := writeMeshConfig(ctx, a.cfg.Kube, a.cfg.Secret.Namespace, a.cfg.MeshConfig, set.PEM); err != nil {
			return err
		} else if wrote {
			a.log.Info("mesh config caCertificates updated", "configmap", a.cfg.Secret.Namespace+"/"+a.cfg.MeshConfig, "trust_domains", len(set.PEM))
		}
	}
	return nil
}

// meshTrustDomain returns the trust domain the istio ConfigMap's mesh
// config names (Istio's default when it names none or does not exist).
func meshTrustDomain(ctx context.Context, kube kubeclient.Interface, namespace, name string) (string, error) {
	cm, err := kube.ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return defaultMeshTrustDomain, nil
	}
	if err != nil {
		return "", fmt.Errorf("read ConfigMap %s/%s: %w", namespace, name, err)
	}
	var mesh struct {
		TrustDomain string `yaml:"trustDomain"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["mesh"]), &mesh); err != nil {
		return "", fmt.Errorf("ConfigMap %s/%s key mesh: not YAML: %v", namespace, name, err)
	}
	if mesh.TrustDomain == "" {
		return defaultMeshTrustDomain, nil
	}
	return mesh.TrustDomain, nil
}

// writeFederatedConfigMap makes the ConfigMap hold exactly set.PEM (keys of
// trust domains no longer federated are removed) and list set.Skipped, in
// one create or update. It reports whether it wrote.
func writeFederatedConfigMap(ctx context.Context, kube kubeclient.Interface, namespace string, set federatedSet) (bool, error) {
	want, skipped := set.PEM, set.skippedAnnotation()
	cms := kube.ConfigMaps(namespace)
	cur, err := cms.Get(ctx, FederatedConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if len(want) == 0 && skipped == "" {
			return false, nil
		}
		cm := &kubeclient.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: FederatedConfigMap, Namespace: namespace, Labels: map[string]string{LabelManagedBy: ManagedBy}},
			Data:       want,
		}
		if skipped != "" {
			cm.Annotations = map[string]string{AnnotationFederatedSkipped: skipped}
		}
		if _, err = cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return false, fmt.Errorf("create ConfigMap %s/%s: %w", namespace, FederatedConfigMap, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read ConfigMap %s/%s: %w", namespace, FederatedConfigMap, err)
	}
	if maps.Equal(cur.Data, want) && cur.Annotations[AnnotationFederatedSkipped] == skipped {
		return false, nil
	}
	next := cur.DeepCopy()
	next.Data = want
	if skipped != "" {
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		next.Annotations[AnnotationFederatedSkipped] = skipped
	} else {
		delete(next.Annotations, AnnotationFederatedSkipped)
	}
	if _, err := cms.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("update ConfigMap %s/%s: %w", namespace, FederatedConfigMap, err)
	}
	return true, nil
}

// writeMeshConfig keeps, in the mesh config of the istio ConfigMap
// ("mesh" key), one caCertificates entry {pem, trustDomains: [td]} per
// federated trust domain. Entries meshroot did not write, and everything
// else in the mesh config, stay as they are. A missing istio ConfigMap is
// not an error (Istio is not installed yet): it reports false.
func writeMeshConfig(ctx context.Context, kube kubeclient.Interface, namespace, name string, want map[string]string) (bool, error) {
	cms := kube.ConfigMaps(namespace)
	cur, err := cms.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read ConfigMap %s/%s: %w", namespace, name, err)
	}
	managed := map[string]bool{}
	for _, td := range strings.Split(cur.Annotations[AnnotationMeshConfigTrustDomains], ",") {
		if td != "" {
			managed[td] = true
		}
	}
	mesh, err := updateCACertificates(cur.Data["mesh"], managed, want)
	if err != nil {
		return false, fmt.Errorf("ConfigMap %s/%s key mesh: %w", namespace, name, err)
	}
	tds := slices.Sorted(maps.Keys(want))
	if mesh == cur.Data["mesh"] && cur.Annotations[AnnotationMeshConfigTrustDomains] == strings.Join(tds, ",") {
		return false, nil
	}
	next := cur.DeepCopy()
	if next.Data == nil {
		next.Data = map[string]string{}
	}
	next.Data["mesh"] = mesh
	if n := dataSize(next); n > maxMeshConfigBytes {
		return false, fmt.Errorf("ConfigMap %s/%s would hold %d bytes with the federated caCertificates, over the %d meshroot allows itself (Kubernetes refuses 1 MiB): not updated; remove federation peers or shrink the mesh config", namespace, name, n, maxMeshConfigBytes)
	}
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	next.Annotations[AnnotationMeshConfigTrustDomains] = strings.Join(tds, ",")
	if _, err := cms.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("update ConfigMap %s/%s: %w", namespace, name, err)
	}
	return true, nil
}

// dataSize is the size of a ConfigMap's data, as Kubernetes counts it.
func dataSize(cm *kubeclient.ConfigMap) int {
	n := 0
	for k, v := range cm.Data {
		n += len(k) + len(v)
	}
	for k, v := range cm.BinaryData {
		n += len(k) + len(v)
	}
	return n
}

// updateCACertificates edits the caCertificates list of a mesh config YAML
// document: entries whose trustDomains are all meshroot-managed (managed)
// are dropped, then one entry per trust domain of want is appended. The
// rest of the document is kept node for node.
func updateCACertificates(meshYAML string, managed map[string]bool, want map[string]string) (string, error) {
	var doc yaml.Node
	if strings.TrimSpace(meshYAML) != "" {
		if err := yaml.Unmarshal([]byte(meshYAML), &doc); err != nil {
			return "", fmt.Errorf("not YAML: %v", err)
		}
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return "", fmt.Errorf("mesh config is not a mapping")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "caCertificates" {
			list = root.Content[i+1]
		}
	}
	if list == nil {
		if len(want) == 0 {
			return meshYAML, nil
		}
		list = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "caCertificates"}, list)
	}
	if list.Kind != yaml.SequenceNode {
		return "", fmt.Errorf("caCertificates is not a list")
	}
	kept := list.Content[:0]
	for _, entry := range list.Content {
		if !isManagedEntry(entry, managed) {
			kept = append(kept, entry)
		}
	}
	list.Content = kept
	tds := make([]string, 0, len(want))
	for td := range want {
		tds = append(tds, td)
	}
	sort.Strings(tds)
	for _, td := range tds {
		list.Content = append(list.Content, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: "pem"},
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: want[td], Style: yaml.LiteralStyle},
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: "trustDomains"},
			{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: td}}},
		}})
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// isManagedEntry reports whether a caCertificates entry names only trust
// domains meshroot manages.
func isManagedEntry(entry *yaml.Node, managed map[string]bool) bool {
	if entry.Kind != yaml.MappingNode || len(managed) == 0 {
		return false
	}
	for i := 0; i+1 < len(entry.Content); i += 2 {
		if entry.Content[i].Value != "trustDomains" || entry.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		tds := entry.Content[i+1].Content
		if len(tds) == 0 {
			return false
		}
		for _, td := range tds {
			if !managed[td.Value] {
				return false
			}
		}
		return true
	}
	return false
}
