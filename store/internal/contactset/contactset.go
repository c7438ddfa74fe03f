// Package contactset turns an agent's status report into the columns of
// the clusters table it sets, the same for every store: RecordContact
// writes them in one conditional UPDATE instead of reading the row,
// merging and writing it back.
package contactset

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/crljson"
	"github.com/meshroot/meshroot/store/internal/istiodjson"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

// Columns returns the columns st sets and their values, as stored:
// last_contact always; bundle_sequence when st.BundleSequence is not zero,
// intermediate_serial when st.IntermediateSerial is set, istiod_status
// when st.Istiod.State is set, applied_crls when st.AppliedCRLs is not
// nil. The gate is never among them (the operator's, not the agent's).
func Columns(st store.ClusterStatus) (cols []string, vals []any, err error) {
	cols, vals = append(cols, "last_contact"), append(vals, timetext.FormatOpt(st.LastContact))
	if st.BundleSequence != 0 {
		if st.BundleSequence > math.MaxInt64 {
			return nil, nil, fmt.Errorf("bundle sequence %d is larger than the largest storable value %d", st.BundleSequence, int64(math.MaxInt64))
		}
		cols, vals = append(cols, "bundle_sequence"), append(vals, int64(st.BundleSequence))
	}
	if st.IntermediateSerial != "" {
		cols, vals = append(cols, "intermediate_serial"), append(vals, st.IntermediateSerial)
	}
	if st.Istiod.State != "" {
		istiod, err := istiodjson.Encode(st.Istiod)
		if err != nil {
			return nil, nil, err
		}
		cols, vals = append(cols, "istiod_status"), append(vals, istiod)
	}
	if st.AppliedCRLs != nil {
		applied, err := crljson.Encode(st.AppliedCRLs)
		if err != nil {
			return nil, nil, err
		}
		cols, vals = append(cols, "applied_crls"), append(vals, applied)
	}
	return cols, vals, nil
}

// Statement is the UPDATE that records st for the cluster called name
// while its registration is the one created at createdAt, with its
// arguments; placeholder(n) is the store's mark of the nth argument,
// from 1.
func Statement(st store.ClusterStatus, name string, createdAt time.Time, placeholder func(n int) string) (string, []any, error) {
	cols, vals, err := Columns(st)
	if err != nil {
		return "", nil, err
	}
	var q strings.Builder
	q.WriteString(`UPDATE clusters SET `)
	for i, c := range cols {
		if i > 0 {
			q.WriteString(`, `)
		}
		q.WriteString(c + ` = ` + placeholder(i+1))
	}
	q.WriteString(` WHERE name = ` + placeholder(len(cols)+1) + ` AND created_at = ` + placeholder(len(cols)+2))
	return q.String(), append(vals, name, timetext.Format(createdAt)), nil
}
