// Package crljson encodes the CRLs a cluster's agent reported it applied
// (store.ClusterStatus.AppliedCRLs) the way every store keeps them in one
// text column: "" when the agent never reported them, else a JSON object
// of root ID to CRL number ("{}" when it wrote no ca-crl.pem).
package crljson

import (
	"encoding/json"
	"fmt"
)

// Encode returns applied as stored.
func Encode(applied map[string]uint64) (string, error) {
	if applied == nil {
		return "", nil
	}
	b, err := json.Marshal(applied)
	if err != nil {
		return "", fmt.Errorf("encode applied CRLs: %w", err)
	}
	return string(b), nil
}

// Decode reads stored applied CRLs.
func Decode(s string) (map[string]uint64, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]uint64{}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decode applied CRLs: %w", err)
	}
	return out, nil
}
