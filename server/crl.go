package server

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// crlMissing counts the CAs of the fleet without a current CRL: while it
// is above 0, agents that never wrote ca-crl.pem leave it out, and the
// others keep it incomplete (agent/crl_plan.go).
var crlMissing = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "meshroot", Name: "crl_missing_cas",
	Help: "CAs of the fleet (roots, cluster intermediates) without a current CRL; while above 0 agents that never wrote ca-crl.pem leave it out, the others keep it incomplete."})

// fleetCRLs is the fleet's CRL set for the hub, or the last one when the
// store fails (a CRL stays valid until its nextUpdate).
func (h *BundleHub) fleetCRLs(ctx context.Context) ca.CRLSet {
	set, err := h.svc.FleetCRLs(ctx)
	if err != nil {
		h.log.WarnContext(ctx, "CRL set unavailable; keeping the last one", "error", err)
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.current.CRLs
	}
	crlMissing.Set(float64(len(set.Missing)))
	if len(set.Missing) > 0 {
		h.log.DebugContext(ctx, "CAs without a current CRL: ca-crl.pem is withheld or incomplete", "missing", set.Missing)
	}
	return set
}

// withCRLs mixes the CRL set, by the keys of its entries, into a bundle
// version, so that watchers get every new CRL.
func withCRLs(v [32]byte, keys CRLKeys, missing []string) [32]byte {
	h := sha256.New()
	h.Write(v[:])
	for _, k := range keys.CRLs {
		h.Write(k[:])
	}
	h.Write([]byte{0})
	for _, k := range keys.Intermediates {
		h.Write(k[:])
	}
	h.Write([]byte(strings.Join(missing, "\x00")))
	copy(v[:], h.Sum(nil))
	return v
}

// serveCRL serves a root's CRL at /crl/<root-id>.crl (DER) or .pem, for
// tools that fetch CRLs. Only roots in the bundle have one.
func (s *Server) serveCRL(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	id, asPEM := strings.CutSuffix(file, ".pem")
	if !asPEM {
		var ok bool
		if id, ok = strings.CutSuffix(file, ".crl"); !ok {
			http.Error(w, "want /crl/<root-id>.crl or /crl/<root-id>.pem", http.StatusNotFound)
			return
		}
	}
	if len(id) == 0 || len(id) > 64 {
		http.Error(w, "no such root", http.StatusNotFound)
		return
	}
	c, err := s.cfg.Service.RootCRL(r.Context(), id)
	var pe *ca.PolicyError
	switch {
	case errors.As(err, &pe) || errors.Is(err, store.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		s.cfg.Log.ErrorContext(r.Context(), "serve CRL", "root", id, "error", err)
		http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Cache-Control", "max-age=300")
	if asPEM {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_ = pem.Encode(w, &pem.Block{Type: "X509 CRL", Bytes: c.DER})
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(c.DER)
}

// submitCRL takes the CRL a cluster's agent sent with its status (if any);
// the service checks and audits it. Agents get the new set at once.
func (s *IssuerServer) submitCRL(ctx context.Context, cluster, method string, der []byte) error {
	if len(der) == 0 {
		return nil
	}
	actor := ca.Actor("cluster:" + cluster + "/" + method)
	if err := s.svc.SubmitClusterCRL(ca.WithActor(ctx, actor), cluster, der); err != nil {
		return toStatus(ctx, s.log, err)
	}
	s.hub.Poke()
	return nil
}
