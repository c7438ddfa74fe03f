package main

import (
	"fmt"
	"log/slog"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/server/fleetpage"
)

// newFleetPage builds the fleet page when the configuration turns it on
// (nil otherwise). Without credentials it is served on the HTTP listener,
// which must then be a loopback address; other hosts reach it only over
// admin mTLS (fleetPageListen, which needs adminListen).
func newFleetPage(cfg serveConfig, svc *ca.Service, log *slog.Logger) (*fleetpage.Page, error) {
	if !cfg.FleetPage && cfg.FleetPageListen == "" {
		return nil, nil
	}
	if cfg.FleetPageListen != "" {
		if cfg.AdminListen == "" {
			return nil, usageError{fmt.Errorf("fleetPageListen/--fleet-page-listen %s serves the fleet page over admin mTLS, which needs the remote admin listener: set adminListen/--admin-listen too (then issue viewer certificates with `meshroot admin cert issue NAME --role viewer`)", cfg.FleetPageListen)}
		}
	} else if err := fleetpage.CheckListener(cfg.HTTPListen); err != nil {
		return nil, usageError{fmt.Errorf("fleetPage/--fleet-page with httpListen/--http-listen %s: without credentials the fleet page is served only on a loopback address; remote access needs admin mTLS: set fleetPageListen/--fleet-page-listen with adminListen/--admin-listen to serve it to holders of an admin certificate, or set --http-listen 127.0.0.1:PORT, or turn the fleet page off", cfg.HTTPListen)}
	}
	page, err := fleetpage.New(fleetpage.Options{Reader: svc, Log: log.With("component", "fleet-page")})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// fleetURL is the page's address for the logs and the dev banner ("off"
// when it is not served).
func fleetURL(cfg serveConfig, srv *server.Server) string {
	switch {
	case cfg.FleetPageListen != "":
		return "https://" + srv.FleetPageAddr() + fleetpage.PathPage
	case cfg.FleetPage:
		return "http://" + srv.HTTPAddr() + fleetpage.PathPage
	}
	return "off"
}

// fleetBanner is the dev banner's fleet page line: its address, the JSON's,
// and with admin mTLS how to get in.
func fleetBanner(cfg serveConfig, srv *server.Server) string {
	fleet := fleetURL(cfg, srv)
	if fleet != "off" {
		fleet += "   (JSON: " + fleet + ".json)"
	}
	if cfg.FleetPageListen != "" {
		fleet += "\n                         admin mTLS: a client certificate from 'meshroot admin cert issue NAME --role viewer --out DIR'"
	}
	return fleet
}
