package kube

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The remote admin listener is off by default; config.adminListen turns it
// on in the configuration, the container, the Service and the NOTES, which
// say how to get the first operator certificate through the socket.
func TestServerChartRemoteAdmin(t *testing.T) {
	off := render(t, serverChart, "meshroot", nil)
	if conf := one[corev1.ConfigMap](t, off, "ConfigMap").Data["config.yaml"]; strings.Contains(conf, "adminListen") {
		t.Errorf("adminListen rendered by default:\n%s", conf)
	}
	for _, p := range one[corev1.Service](t, off, "Service").Spec.Ports {
		if p.Name == "admin" {
			t.Errorf("the Service exposes the admin port by default")
		}
	}
	if strings.Contains(off.notes, "Remote admin") {
		t.Errorf("NOTES describe remote admin while it is off:\n%s", off.notes)
	}

	on := render(t, serverChart, "meshroot", map[string]any{"config": map[string]any{"adminListen": ":9443"}})
	if conf := one[corev1.ConfigMap](t, on, "ConfigMap").Data["config.yaml"]; !strings.Contains(conf, `adminListen: ":9443"`) {
		t.Errorf("config.yaml has no adminListen:\n%s", conf)
	}
	var container int32
	for _, p := range one[appsv1.Deployment](t, on, "Deployment").Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "admin" {
			container = p.ContainerPort
		}
	}
	var svc int32
	for _, p := range one[corev1.Service](t, on, "Service").Spec.Ports {
		if p.Name == "admin" && p.TargetPort.String() == "admin" {
			svc = p.Port
		}
	}
	if container != 9443 || svc != 9443 {
		t.Errorf("admin container port %d, Service port %d; want 9443 and 9443", container, svc)
	}
	for _, want := range []string{
		"meshroot.meshroot.svc:9443",
		"exec deploy/meshroot -- /meshroot admin cert issue $USER --role operator --out /tmp/admin-$USER",
		"--server localhost:9443 --admin-cert ./admin-$USER",
		"admin cert revoke SERIAL",
	} {
		if !strings.Contains(on.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, on.notes)
		}
	}
}

// The fleet page over admin mTLS is off by default; config.fleetPageListen
// (with config.adminListen) turns it on in the configuration, the
// container, the Service and the NOTES, which say how to open it with a
// viewer certificate; without adminListen the chart refuses to render.
func TestServerChartFleetPage(t *testing.T) {
	off := render(t, serverChart, "meshroot", map[string]any{"config": map[string]any{"adminListen": ":9443"}})
	if conf := one[corev1.ConfigMap](t, off, "ConfigMap").Data["config.yaml"]; strings.Contains(conf, "fleetPage") {
		t.Errorf("the fleet page is configured by default:\n%s", conf)
	}
	for _, p := range one[corev1.Service](t, off, "Service").Spec.Ports {
		if p.Name == "fleet" {
			t.Errorf("the Service exposes the fleet page by default")
		}
	}
	if strings.Contains(off.notes, "Fleet page") {
		t.Errorf("NOTES describe the fleet page while it is off:\n%s", off.notes)
	}

	on := render(t, serverChart, "meshroot", map[string]any{"config": map[string]any{"adminListen": ":9443", "fleetPageListen": ":9444"}})
	if conf := one[corev1.ConfigMap](t, on, "ConfigMap").Data["config.yaml"]; !strings.Contains(conf, `fleetPageListen: ":9444"`) || strings.Contains(conf, "fleetPage:") {
		t.Errorf("config.yaml: want fleetPageListen and no fleetPage on the HTTP listener:\n%s", conf)
	}
	var container int32
	for _, p := range one[appsv1.Deployment](t, on, "Deployment").Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "fleet" {
			container = p.ContainerPort
		}
	}
	var svc int32
	for _, p := range one[corev1.Service](t, on, "Service").Spec.Ports {
		if p.Name == "fleet" && p.TargetPort.String() == "fleet" {
			svc = p.Port
		}
	}
	if container != 9444 || svc != 9444 {
		t.Errorf("fleet container port %d, Service port %d; want 9444 and 9444", container, svc)
	}
	for _, want := range []string{
		"https://meshroot.meshroot.svc:9444/fleet",
		"--role viewer",
		"port-forward svc/meshroot 9444",
		"--cert ./admin-$USER/cert.pem --key ./admin-$USER/key.pem https://localhost:9444/fleet.json",
	} {
		if !strings.Contains(on.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, on.notes)
		}
	}

	if _, err := renderErr(serverChart, "meshroot", map[string]any{"config": map[string]any{"fleetPageListen": ":9444"}}); err == nil || !strings.Contains(err.Error(), "set config.adminListen too") {
		t.Errorf("fleetPageListen without adminListen rendered: %v", err)
	}
}
