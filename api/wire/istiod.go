package wire

import (
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/store"
)

// IstiodFromReport is the istiod confirmation carried by an agent's
// status report (State "" when the agent does not confirm).
func IstiodFromReport(r *meshrootv1.ReportStatusRequest) store.IstiodStatus {
	return store.IstiodStatus{
		State: r.GetIstiodState(), BundleSequence: r.GetIstiodBundleSequence(), Serial: r.GetIstiodSerial(),
		Probed: r.GetIstiodProbed(), Roots: r.GetIstiodRoots(), Detail: r.GetIstiodDetail(),
		Since: unixOrZero(r.GetIstiodSince()), StaleSince: unixOrZero(r.GetIstiodStaleSince()),
	}
}

// SetIstiod puts st into the status report r.
func SetIstiod(r *meshrootv1.ReportStatusRequest, st store.IstiodStatus) {
	r.IstiodState, r.IstiodBundleSequence, r.IstiodSerial = st.State, st.BundleSequence, st.Serial
	r.IstiodProbed, r.IstiodRoots, r.IstiodDetail = st.Probed, st.Roots, st.Detail
	r.IstiodSince, r.IstiodStaleSince = unixOrZeroInt(st.Since), unixOrZeroInt(st.StaleSince)
}

func unixOrZero(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

func unixOrZeroInt(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}
