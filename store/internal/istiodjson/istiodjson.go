// Package istiodjson encodes a cluster's istiod confirmation state
// (store.IstiodStatus) the way every store keeps it in one text column:
// "" when the agent never reported one, else JSON with UTC times.
package istiodjson

import (
	"encoding/json"
	"fmt"

	"github.com/meshroot/meshroot/store"
)

// Encode returns st as stored.
func Encode(st store.IstiodStatus) (string, error) {
	if st.State == "" && st.Serial == "" && st.BundleSequence == 0 && len(st.Roots) == 0 {
		return "", nil
	}
	st.Since, st.StaleSince = st.Since.UTC(), st.StaleSince.UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("encode istiod status: %w", err)
	}
	return string(b), nil
}

// Decode reads a stored istiod status.
func Decode(s string) (store.IstiodStatus, error) {
	var st store.IstiodStatus
	if s == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return st, fmt.Errorf("decode istiod status: %w", err)
	}
	return st, nil
}
