package kubeclient

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// apiLike answers Secret PUTs as the API server does: with the stored
// Secret, or with its PartialObjectMetadata when the Accept header asks
// for it; partial answers 406 to such a request instead when it is false
// (an API server without meta.k8s.io/v1).
type apiLike struct {
	partial bool
	rv      atomic.Int64
	accepts []string
	bodies  [][]byte
}

func (a *apiLike) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.accepts = append(a.accepts, r.Header.Get("Accept"))
	a.bodies = append(a.bodies, body)
	w.Header().Set("Content-Type", "application/json")
	var s Secret
	if err := json.Unmarshal(body, &s); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	wantsMeta := strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadata")
	if wantsMeta && !a.partial {
		w.WriteHeader(http.StatusNotAcceptable)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotAcceptable","code":406,"message":"only the following media types are accepted: application/json"}`)
		return
	}
	s.ResourceVersion = strconv.FormatInt(a.rv.Add(1), 10)
	s.UID = "u-1"
	var out any = &s
	if wantsMeta {
		out = &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: s.ObjectMeta}
	}
	json.NewEncoder(w).Encode(out)
}

// UpdateMeta asks for the stored metadata only, and answers with that
// metadata and the data it sent; an API server that cannot answer so
// (406, before it writes) gets a plain Update, and a whole Secret as the
// answer is taken as Update's.
func TestSecretUpdateMeta(t *testing.T) {
	ctx := context.Background()
	data := map[string][]byte{"ca-cert.pem": []byte("PEM"), "ca-crl.pem": bytes.Repeat([]byte("C"), 4096)}
	sent := func() *Secret {
		return &Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", ResourceVersion: "1", Annotations: map[string]string{"a": "1"}}, Type: SecretTypeOpaque, Data: data}
	}
	for _, partial := range []bool{true, false} {
		api := &apiLike{partial: partial}
		srv := httptest.NewServer(api)
		c, err := New(&rest.Config{Host: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Secrets("istio-system").UpdateMeta(ctx, sent(), metav1.UpdateOptions{})
		srv.Close()
		if err != nil {
			t.Fatalf("partial answers %v: %v", partial, err)
		}
		if out.ResourceVersion != "1" && out.ResourceVersion != "2" || out.UID != "u-1" || out.Annotations["a"] != "1" || out.Name != "cacerts" {
			t.Errorf("partial answers %v: the answer's metadata is not the stored one: %+v", partial, out.ObjectMeta)
		}
		if out.Type != SecretTypeOpaque || !bytes.Equal(out.Data["ca-crl.pem"], data["ca-crl.pem"]) || len(out.Data) != 2 {
			t.Errorf("partial answers %v: the answer does not hold the data sent: type %q, %d files", partial, out.Type, len(out.Data))
		}
		if out.Kind != "Secret" || out.APIVersion != "v1" {
			t.Errorf("partial answers %v: kind %q apiVersion %q, want a v1 Secret", partial, out.Kind, out.APIVersion)
		}
		if !strings.Contains(api.accepts[0], "as=PartialObjectMetadata;g=meta.k8s.io;v=v1") {
			t.Errorf("Accept %q: does not ask for PartialObjectMetadata", api.accepts[0])
		}
		if partial {
			if len(api.accepts) != 1 {
				t.Errorf("%d requests, want 1", len(api.accepts))
			}
			if &out.Data["ca-crl.pem"][0] != &data["ca-crl.pem"][0] {
				t.Error("the answer's data is a copy: UpdateMeta is there not to move it again")
			}
		} else {
			if len(api.accepts) != 2 || strings.Contains(api.accepts[1], "PartialObjectMetadata") {
				t.Errorf("after a 406: requests with Accept %q, want a second one for the whole Secret", api.accepts)
			}
		}
	}

	// A conflict is the server's, as Update returns it.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified"}`)
	}))
	defer srv.Close()
	c, err := New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Secrets("istio-system").UpdateMeta(ctx, sent(), metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("UpdateMeta on a conflict: %v, want the Conflict status", err)
	}

	// The whole Secret as the answer (the Accept parameters dropped on
	// the way): the update was made, and that answer is the Secret
	// stored. Any other kind is an error.
	kind := "Secret"
	odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"`+kind+`","apiVersion":"v1","metadata":{"name":"cacerts","resourceVersion":"9"},"type":"Opaque","data":{"ca-cert.pem":"U1RPUkVE"}}`)
	}))
	defer odd.Close()
	if c, err = New(&rest.Config{Host: odd.URL}); err != nil {
		t.Fatal(err)
	}
	out, err := c.Secrets("istio-system").UpdateMeta(ctx, sent(), metav1.UpdateOptions{})
	if err != nil || out.ResourceVersion != "9" || string(out.Data["ca-cert.pem"]) != "STORED" || len(out.Data) != 1 {
		t.Errorf("UpdateMeta answered with the whole Secret: %+v, %v; want that Secret", out, err)
	}
	kind = "ConfigMap"
	if _, err := c.Secrets("istio-system").UpdateMeta(ctx, sent(), metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "PartialObjectMetadata") {
		t.Errorf("UpdateMeta answered with a ConfigMap: %v, want an error naming the answer", err)
	}
}

// BenchmarkSecretWrite1MB is the client's part of one write of a
// cacerts Secret holding a 1,000-cluster fleet's ~1 MB ca-crl.pem: Update
// encodes it and decodes the whole Secret the API server answers with;
// UpdateMeta decodes only the metadata. The server, an httptest one,
// reads the request and answers with bytes encoded once, as the API
// server would answer (the whole Secret, or its PartialObjectMetadata).
// cpu-ns/op is the process's CPU (client and that server) per write.
func BenchmarkSecretWrite1MB(b *testing.B) {
	data := map[string][]byte{"ca-cert.pem": bytes.Repeat([]byte("A"), 800), "ca-crl.pem": bytes.Repeat([]byte("C"), 1<<20-8<<10)}
	meta := metav1.ObjectMeta{Name: "cacerts", Namespace: "istio-system", ResourceVersion: "2", UID: "u-1", Annotations: map[string]string{"a": "1"}}
	whole, err := json.Marshal(&Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"}, ObjectMeta: meta, Type: SecretTypeOpaque, Data: data})
	if err != nil {
		b.Fatal(err)
	}
	partial, err := json.Marshal(&metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: meta})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadata") {
			w.Write(partial)
		} else {
			w.Write(whole)
		}
	}))
	defer srv.Close()
	// No client-side rate limit (client-go's default: 5 requests/s).
	c, err := New(&rest.Config{Host: srv.URL, QPS: -1})
	if err != nil {
		b.Fatal(err)
	}
	secrets := c.Secrets("istio-system")
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		write func(context.Context, *Secret, metav1.UpdateOptions) (*Secret, error)
	}{{"Update", secrets.Update}, {"UpdateMeta", secrets.UpdateMeta}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := processCPU(b)
			for b.Loop() {
				s := &Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", ResourceVersion: "1"}, Type: SecretTypeOpaque, Data: data}
				out, err := bc.write(ctx, s, metav1.UpdateOptions{})
				if err != nil || out.ResourceVersion != "2" || len(out.Data["ca-crl.pem"]) != len(data["ca-crl.pem"]) {
					b.Fatalf("write: %v, %+v", err, out.ObjectMeta)
				}
			}
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the process's user and system CPU time so far, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
