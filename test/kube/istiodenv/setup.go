package istiodenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// --- CRDs ---

var crdMu sync.Mutex

// InstallCRDs applies the Istio CRDs (the 15 of the pinned module's
// manifests/charts/base/files/crd-all.gen.yaml) to cluster c if they are not
// there and waits until they are Established. Start calls it.
func InstallCRDs(t testing.TB, c *kubeenv.Cluster) {
	t.Helper()
	crdMu.Lock()
	defer crdMu.Unlock()
	crds, err := loadCRDs()
	if err != nil {
		t.Fatalf("istiodenv: %v", err)
	}
	client, err := apiextensionsclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for _, crd := range crds {
		_, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("istiodenv: creating CRD %s in %q: %v", crd.Name, c.Name, err)
		}
	}
	for _, crd := range crds {
		for {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err == nil && established(got) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("istiodenv: CRD %s not Established in %q: %v", crd.Name, c.Name, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

var (
	crdOnce sync.Once
	crdList []*apiextensionsv1.CustomResourceDefinition
	crdErr  error
)

func loadCRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	crdOnce.Do(func() {
		dir, err := istioModuleDir()
		if err != nil {
			crdErr = err
			return
		}
		path := filepath.Join(dir, crdFile)
		data, err := os.ReadFile(path)
		if err != nil {
			crdErr = fmt.Errorf("reading Istio's CRDs: %w", err)
			return
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := dec.Decode(&crd); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				crdErr = fmt.Errorf("parsing %s: %w", path, err)
				return
			}
			if crd.Kind == "CustomResourceDefinition" {
				crdList = append(crdList, &crd)
			}
		}
		if len(crdList) == 0 {
			crdErr = fmt.Errorf("no CustomResourceDefinition in %s", path)
		}
	})
	return crdList, crdErr
}

// istioModuleDir is the pinned istio.io/istio in the module cache, as
// `go list -m` in test/tools/istiod (which requires it) reports it.
func istioModuleDir() (string, error) {
	script, err := kubeenv.BuildScript()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio")
	cmd.Dir = filepath.Join(filepath.Dir(script), "istiod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		return "", fmt.Errorf("go list -m istio.io/istio in %s: %v %s (run test/tools/build.sh istiod first)", cmd.Dir, err, stderr.String())
	}
	return dir, nil
}

// --- the binary ---

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of pilot-discovery, building it with
// test/tools/build.sh istiod when it is not in the tool cache (a long
// build on a cold machine). When it is absent and MESHROOT_SKIP_ISTIOD=1,
// the test is skipped.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = buildIstiod() })
	if binErr != nil {
		t.Fatalf("istiodenv: %v", binErr)
	}
	if fi, err := os.Stat(binPath); err != nil || fi.IsDir() {
		if os.Getenv("MESHROOT_SKIP_ISTIOD") == "1" {
			t.Skipf("istiod (pilot-discovery) is not built at %s and MESHROOT_SKIP_ISTIOD=1: skipping; run test/tools/build.sh istiod (~7.5 CPU-minutes cold) to run this test", binPath)
		}
		t.Fatalf("istiodenv: build.sh printed %s but there is no binary there", binPath)
	}
	return binPath
}

func buildIstiod() (string, error) {
	script, err := kubeenv.BuildScript()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script, "istiod")
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr) // a cold build shows its progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s istiod: %v\n%s", script, err, stderr.String())
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if p, ok := strings.CutPrefix(line, "istiod "); ok {
			return strings.TrimSpace(p), nil
		}
	}
	return "", fmt.Errorf("%s istiod printed no binary path: %q", script, stdout.String())
}
