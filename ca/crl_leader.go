package ca

import (
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

// SetCRLSigning makes RootCRL sign root CRLs only while may reports true:
// of several servers sharing a store, only the leader re-signs (it runs
// that as singleton work); the others serve the CRL the leader stored, as
// long as it is current. Without it, every caller of RootCRL signs when a
// CRL is due. Call it before the service is used.
func (s *Service) SetCRLSigning(may func() bool) {
	s.mayResignCRL = may
}

// followerCRL is what RootCRL returns where it may not sign: the stored
// CRL (old, read with error getErr) while it is current.
func followerCRL(rootID string, old store.CRL, getErr error, now time.Time) (store.CRL, error) {
	switch {
	case errors.Is(getErr, store.ErrNotFound):
		return store.CRL{}, fmt.Errorf("root %s has no CRL yet: the leader signs it (see `meshroot root status` for which server leads)", short(rootID))
	case !old.NextUpdate.After(now):
		return store.CRL{}, fmt.Errorf("root %s: the stored CRL expired at %s and the leader has not re-signed it: check that a server leads (`meshroot root status`)", short(rootID), old.NextUpdate.UTC().Format(time.RFC3339))
	}
	return old, nil
}
