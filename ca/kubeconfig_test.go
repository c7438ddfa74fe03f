package ca_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

const inlineKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: east
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Y2E=
users:
- name: meshroot
  user:
%s
contexts:
- name: east
  context: {cluster: east, user: meshroot}
current-context: east
`

func kubeconfigWithUser(user string) []byte {
	return []byte(strings.Replace(inlineKubeconfig, "%s", user, 1))
}

func TestCheckKubeconfigFileRefs(t *testing.T) {
	for _, ok := range []string{
		"    token: abc",
		"    client-certificate-data: Y2VydA==\n    client-key-data: a2V5",
		"    token: abc\n    tokenFile: \"\"", // present but empty: reads nothing
		"    token: abc\n    tokenFile: null",
	} {
		if err := ca.CheckKubeconfigFileRefs(kubeconfigWithUser(ok)); err != nil {
			t.Errorf("user %q: %v, want accepted", ok, err)
		}
	}
	for user, want := range map[string]string{
		"    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token": `users["meshroot"].user.tokenFile`,
		"    TOKENFILE: /etc/shadow":                                         `users["meshroot"].user.TOKENFILE`,
		"    client-certificate: /etc/ssl/c.pem":                             `users["meshroot"].user.client-certificate`,
		"    client-key: /etc/ssl/k.pem":                                     `users["meshroot"].user.client-key`,
		"    exec:\n      command: /bin/sh":                                  `users["meshroot"].user.exec`,
		"    auth-provider:\n      name: gcp":                                `users["meshroot"].user.auth-provider`,
		"    token: abc\n  extra: {certificate-authority: /x}":               `users["meshroot"].extra.certificate-authority`,
	} {
		err := ca.CheckKubeconfigFileRefs(kubeconfigWithUser(user))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "use token, not tokenFile") {
			t.Errorf("user %q: %v, want a refusal naming %s", user, err, want)
		}
	}
	// JSON is YAML too; a CA file named in a cluster entry is refused.
	err := ca.CheckKubeconfigFileRefs([]byte(`{"clusters":[{"name":"c","cluster":{"server":"https://x","certificate-authority":"/ca.pem"}}]}`))
	if err == nil || !strings.Contains(err.Error(), `clusters["c"].cluster.certificate-authority`) {
		t.Errorf("JSON kubeconfig with a CA file: %v", err)
	}
	if err := ca.CheckKubeconfigFileRefs([]byte("{{{")); err == nil {
		t.Error("garbage accepted")
	}
}

// TestAddClusterRefusesKubeconfigFiles: registration refuses a TokenReview
// kubeconfig that names a file, and audits the refusal.
func TestAddClusterRefusesKubeconfigFiles(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	_, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east", TrustDomain: "example.org", Auth: store.ClusterAuth{
		Kubeconfig: kubeconfigWithUser("    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"), ServiceAccounts: []string{"istio-system/meshroot-agent"},
	}})
	var pe *ca.PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "embed the data") || !strings.Contains(err.Error(), "tokenFile") {
		t.Fatalf("AddCluster with a tokenFile kubeconfig: %v, want a refusal saying to embed the data", err)
	}
	if _, err := st.GetCluster(ctx, "east"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cluster stored after the refusal: %v", err)
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil || len(entries) == 0 {
		t.Fatal(entries, err)
	}
	if last := entries[len(entries)-1]; last.Action != "cluster.add" || last.Result != "denied" {
		t.Errorf("last audit row %s %s, want cluster.add denied", last.Action, last.Result)
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east", TrustDomain: "example.org", Auth: store.ClusterAuth{
		Kubeconfig: kubeconfigWithUser("    token: abc"), ServiceAccounts: []string{"istio-system/meshroot-agent"},
	}}); err != nil {
		t.Fatalf("AddCluster with an inline kubeconfig: %v", err)
	}
}
