package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// FederatedConfigMap holds, one key per foreign trust domain, the PEM roots
// of the trust domains this one federates with.
const FederatedConfigMap = "meshroot-federated-bundles"

// AnnotationMeshConfigTrustDomains records on the istio ConfigMap which
// caCertificates entries meshroot manages, so that it never touches others.
const AnnotationMeshConfigTrustDomains = "meshroot.io/mesh-config-trust-domains"

// federatedPEM turns the federated bundles into trust domain -> PEM roots.
func federatedPEM(fed []*meshrootv1.FederatedBundle) (map[string]string, error) {
	out := make(map[string]string, len(fed))
	for _, f := range fed {
		var b strings.Builder
		for _, der := range f.GetRoots() {
			if _, err := x509.ParseCertificate(der); err != nil {
				return nil, fmt.Errorf("federated bundle of %s: %w", f.GetTrustDomain(), err)
			}
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		if b.Len() > 0 {
			out[f.GetTrustDomain()] = b.String()
		}
	}
	return out, nil
}

// writeFederatedConfigMap makes the ConfigMap hold exactly want (keys of
// trust domains no longer federated are removed), in one create or update.
// It reports whether it wrote.
func writeFederatedConfigMap(ctx context.Context, kube kubernetes.Interface, namespace string, want map[string]string) (bool, error) {
	cms := kube.CoreV1().ConfigMaps(namespace)
	cur, err := cms.Get(ctx, FederatedConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if len(want) == 0 {
			return false, nil
		}
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: FederatedConfigMap, Namespace: namespace, Labels: map[string]string{LabelManagedBy: ManagedBy}},
			Data:       want,
		}, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("create ConfigMap %s/%s: %w", namespace, FederatedConfigMap, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read ConfigMap %s/%s: %w", namespace, FederatedConfigMap, err)
	}
	if maps.Equal(cur.Data, want) {
		return false, nil
	}
	next := cur.DeepCopy()
	next.Data = want
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
func writeMeshConfig(ctx context.Context, kube kubernetes.Interface, namespace, name string, want map[string]string) (bool, error) {
	cms := kube.CoreV1().ConfigMaps(namespace)
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
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	next.Annotations[AnnotationMeshConfigTrustDomains] = strings.Join(tds, ",")
	if _, err := cms.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("update ConfigMap %s/%s: %w", namespace, name, err)
	}
	return true, nil
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
