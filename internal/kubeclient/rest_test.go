package kubeclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// The client against a recorded API: request lines and bodies as the API
// server expects them, and its Status answers as client-go's errors. The
// agent's tests in test/kube run it against a real kube-apiserver.
func TestSecretRequestsAndErrors(t *testing.T) {
	var got []string
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodGet:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"secrets \"cacerts\" not found","details":{"name":"cacerts","kind":"secrets"}}`)
		case http.MethodPut:
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified; please apply your changes to the latest version"}`)
		case http.MethodPost:
			b, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(b, &body); err != nil {
				t.Errorf("create body: %v: %s", err, b)
			}
			w.WriteHeader(http.StatusCreated)
			w.Write(b)
		}
	}))
	defer srv.Close()
	c, err := New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secrets := c.Secrets("istio-system")

	if _, err := secrets.Get(ctx, "cacerts", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get of a missing Secret: %v, want a NotFound status error", err)
	}
	s := &Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", ResourceVersion: "7"}, Type: SecretTypeOpaque, Data: map[string][]byte{"ca-cert.pem": []byte("PEM")}}
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "please apply your changes") {
		t.Errorf("Update: %v, want the server's Conflict status", err)
	}
	out, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if body["kind"] != "Secret" || body["apiVersion"] != "v1" || body["type"] != "Opaque" {
		t.Errorf("create body: %v, want kind Secret, apiVersion v1, type Opaque", body)
	}
	if data, _ := body["data"].(map[string]any); data["ca-cert.pem"] != "UEVN" {
		t.Errorf("create body data: %v, want base64 of PEM", body["data"])
	}
	if string(out.Data["ca-cert.pem"]) != "PEM" || out.Name != "cacerts" {
		t.Errorf("decoded answer: %+v", out)
	}
	want := []string{"GET /api/v1/namespaces/istio-system/secrets/cacerts", "PUT /api/v1/namespaces/istio-system/secrets/cacerts", "POST /api/v1/namespaces/istio-system/secrets"}
	if len(got) != len(want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, got[i], want[i])
		}
	}
}

// A DeepCopy shares no map or slice with its original.
func TestDeepCopy(t *testing.T) {
	s := &Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"a": "1"}}, Data: map[string][]byte{"k": []byte("v")}}
	c := s.DeepCopy()
	c.Annotations["a"] = "2"
	c.Data["k"][0] = 'x'
	if s.Annotations["a"] != "1" || string(s.Data["k"]) != "v" {
		t.Errorf("the copy changed the original: %+v", s)
	}
	cm := &ConfigMap{Data: map[string]string{"k": "v"}, BinaryData: map[string][]byte{"b": []byte("1")}}
	cc := cm.DeepCopy()
	cc.Data["k"], cc.BinaryData["b"][0] = "w", '2'
	if cm.Data["k"] != "v" || string(cm.BinaryData["b"]) != "1" {
		t.Errorf("the copy changed the original: %+v", cm)
	}
}
