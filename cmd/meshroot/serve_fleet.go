package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server/fleetpage"
)

// newFleetPage builds the fleet page when the configuration turns it on
// (nil otherwise), refusing an HTTP listener other hosts could reach:
// until admin mTLS guards it, the page is for this machine only.
func newFleetPage(cfg serveConfig, svc *ca.Service, log *slog.Logger) (http.Handler, error) {
	if !cfg.FleetPage {
		return nil, nil
	}
	if err := fleetpage.CheckListener(cfg.HTTPListen); err != nil {
		return nil, usageError{fmt.Errorf("fleetPage/--fleet-page with httpListen/--http-listen %s: the fleet page is served only on a loopback address: remote access needs admin mTLS, coming; set --http-listen 127.0.0.1:PORT or turn the fleet page off", cfg.HTTPListen)}
	}
	page, err := fleetpage.New(fleetpage.Options{Reader: svc, Log: log.With("component", "fleet-page")})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// fleetURL is the page's address for the logs and the dev banner ("off"
// when it is not served).
func fleetURL(on bool, httpAddr string) string {
	if !on {
		return "off"
	}
	return "http://" + httpAddr + fleetpage.PathPage
}
