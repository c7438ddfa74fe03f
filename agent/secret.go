package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
)

// Labels and annotations meshroot puts on the cacerts Secret.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "meshroot"
)

// SecretRef names the cacerts Secret.
type SecretRef struct {
	Namespace string
	Name      string
}

// DefaultSecret is where istiod reads plugged-in CA certificates.
var DefaultSecret = SecretRef{Namespace: "istio-system", Name: "cacerts"}

// Current is the cacerts Secret as found in the cluster.
type Current struct {
	// Secret is nil when there is none.
	Secret *kubeclient.Secret
	// CACerts is the parsed content, when the Secret is meshroot's and whole.
	CACerts *ca.CACerts
	// Format of the Secret's files.
	Format ca.Format
	// Problem says why CACerts is nil although a meshroot Secret exists.
	Problem error
}

// ManagedByMeshroot reports whether the Secret carries meshroot's label.
func (c *Current) ManagedByMeshroot() bool {
	return c.Secret != nil && c.Secret.Labels[LabelManagedBy] == ManagedBy
}

// ReadSecret reads and parses the cacerts Secret.
func ReadSecret(ctx context.Context, kube kubeclient.Interface, ref SecretRef) (*Current, error) {
	return readSecret(ctx, kube, ref, nil)
}

// readSecret is ReadSecret, parsing through memo (nil: none).
func readSecret(ctx context.Context, kube kubeclient.Interface, ref SecretRef, memo *parsedSecret) (*Current, error) {
	s, err := kube.Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &Current{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	return currentOf(s, memo), nil
}

// currentOf parses s (as read, or as a write returned it) through memo
// (nil: none).
func currentOf(s *kubeclient.Secret, memo *parsedSecret) *Current {
	cur := &Current{Secret: s}
	cur.CACerts, cur.Format, cur.Problem = memo.parse(s.Data)
	return cur
}

// secretFiles are the names of the cacerts files in data's layout: the
// tls.crt layout when data has tls.crt, else Istio's.
func secretFiles(data map[string][]byte) (format ca.Format, certFile, keyFile, chainFile, rootFile string) {
	if _, ok := data[ca.TLSCertFile]; ok {
		return ca.FormatTLS, ca.TLSCertFile, ca.TLSKeyFile, ca.TLSCertFile, ca.TLSCAFile
	}
	return ca.FormatIstio, ca.CACertFile, ca.CAKeyFile, ca.CertChainFile, ca.RootCertFile
}

// parseSecret reads cacerts files in either layout.
func parseSecret(data map[string][]byte) (*ca.CACerts, ca.Format, error) {
	return parseSecretWith(data, x509.ParseCertificate, parseKey)
}

// parseSecretWith is parseSecret with every certificate's DER handed to
// parse, and the key file to key.
func parseSecretWith(data map[string][]byte, parse func(der []byte) (*x509.Certificate, error), key func(pemData []byte) (crypto.Signer, error)) (*ca.CACerts, ca.Format, error) {
	format, certFile, keyFile, chainFile, rootFile := secretFiles(data)
	certs, err := ca.ParseCertsWith(data[certFile], parse)
	if err != nil {
		return nil, format, fmt.Errorf("%s: %w", certFile, err)
	}
	signer, err := key(data[keyFile])
	if err != nil {
		return nil, format, fmt.Errorf("%s: %w", keyFile, err)
	}
	chain, err := ca.ParseCertsWith(data[chainFile], parse)
	if err != nil {
		return nil, format, fmt.Errorf("%s: %w", chainFile, err)
	}
	roots, err := ca.ParseCertsWith(data[rootFile], parse)
	if err != nil {
		return nil, format, fmt.Errorf("%s: %w", rootFile, err)
	}
	if format == ca.FormatTLS {
		chain = append(chain, roots[0])
		for _, r := range roots {
			if err := chain[len(chain)-2].CheckSignatureFrom(r); err == nil {
				chain[len(chain)-1] = r
			}
		}
	}
	return &ca.CACerts{Cert: certs[0], Key: signer, Chain: chain, Roots: roots}, format, nil
}

func parseKey(pemData []byte) (crypto.Signer, error) {
	k, err := parsePrivateKey(pemData)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a private key")
	}
	return s, nil
}

// WriteSecret writes files as the cacerts Secret in one create or update.
// An update carries the resourceVersion that was read (prev), so a
// concurrent change fails instead of being overwritten; a Secret that
// meshroot does not manage is never touched unless adopt is set.
func WriteSecret(ctx context.Context, kube kubeclient.Interface, ref SecretRef, prev *Current, format ca.Format, files map[string][]byte, annotations map[string]string, adopt bool) (*kubeclient.Secret, error) {
	secretType := kubeclient.SecretTypeOpaque
	if format == ca.FormatTLS {
		secretType = kubeclient.SecretTypeTLS
	}
	if prev == nil || prev.Secret == nil {
		s := &kubeclient.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: ref.Name, Namespace: ref.Namespace,
				Labels:      map[string]string{LabelManagedBy: ManagedBy},
				Annotations: annotations,
			},
			Type: secretType,
			Data: files,
		}
		out, err := kube.Secrets(ref.Namespace).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create Secret %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		return out, nil
	}
	if !prev.ManagedByMeshroot() && !adopt {
		return nil, fmt.Errorf("Secret %s/%s exists and is not managed by meshroot (no label %s=%s): delete it, or pass --adopt to replace it", ref.Namespace, ref.Name, LabelManagedBy, ManagedBy)
	}
	if prev.Secret.Type != "" && prev.Secret.Type != secretType {
		return nil, fmt.Errorf("Secret %s/%s has type %s, but format %s needs %s: the type cannot change; delete the Secret first", ref.Namespace, ref.Name, prev.Secret.Type, format, secretType)
	}
	// Copy everything but the data, which files replaces: at 1,000
	// clusters ca-crl.pem alone is ~1 MB.
	meta := *prev.Secret
	meta.Data, meta.StringData = nil, nil
	s := meta.DeepCopy()
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[LabelManagedBy] = ManagedBy
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	maps.Copy(s.Annotations, annotations)
	s.Data = files // the whole set, so no file of the old layout lingers
	s.StringData = nil
	// The answer's metadata is enough: the data is files.
	out, err := kube.Secrets(ref.Namespace).UpdateMeta(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	return out, nil
}
