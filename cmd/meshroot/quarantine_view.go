package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// enforcementView is, for `cluster list` and `root status`, how far the
// other clusters enforce a quarantine.
type enforcementView struct {
	// Listed says the roots' CRLs list all the cluster's intermediates.
	Listed bool `json:"listed"`
	// AppliedBy are the clusters whose ca-crl.pem holds those CRLs.
	AppliedBy []string `json:"applied_by"`
	// Pending are the clusters that have not applied them yet.
	Pending []pendingView `json:"pending"`
}

// pendingView is a cluster that does not enforce a quarantine yet.
type pendingView struct {
	Cluster     string    `json:"cluster"`
	LastContact time.Time `json:"last_contact,omitzero"`
	Detail      string    `json:"detail"`
}

func viewEnforcement(q ca.QuarantineStatus) *enforcementView {
	v := &enforcementView{Listed: q.Listed, AppliedBy: []string{}, Pending: []pendingView{}}
	for _, e := range q.Enforcement {
		if e.Applied {
			v.AppliedBy = append(v.AppliedBy, e.Cluster)
		} else {
			v.Pending = append(v.Pending, pendingView{Cluster: e.Cluster, LastContact: e.LastContact, Detail: e.Detail})
		}
	}
	return v
}

// viewQuarantineStatus is a quarantine with its enforcement.
func viewQuarantineStatus(q ca.QuarantineStatus) quarantineView {
	v := viewQuarantine(q.Quarantine)
	v.Enforcement = viewEnforcement(q)
	return v
}

// describe says who enforces, in one line: "applied by east, north;
// pending: south (last seen 3m ago)".
func (e *enforcementView) describe(now time.Time) string {
	if e == nil {
		return ""
	}
	applied := "none"
	if len(e.AppliedBy) > 0 {
		applied = strings.Join(e.AppliedBy, ", ")
	}
	s := "applied by " + applied
	if len(e.Pending) > 0 {
		p := make([]string, len(e.Pending))
		for i, c := range e.Pending {
			p[i] = c.Cluster + " (" + lastSeen(c.LastContact, now) + ")"
		}
		s += "; pending: " + strings.Join(p, ", ")
	}
	if !e.Listed {
		s += "; not on the roots' CRLs yet"
	}
	return s
}

func lastSeen(t, now time.Time) string {
	if t.IsZero() {
		return "never seen"
	}
	return "last seen " + now.Sub(t).Round(time.Second).String() + " ago"
}

// printQuarantineStatuses prints, below `root status`, each quarantine and
// its enforcement, with why each pending cluster is pending.
func printQuarantineStatuses(w io.Writer, qs []ca.QuarantineStatus, now time.Time) {
	for _, q := range qs {
		e := viewEnforcement(q)
		fmt.Fprintf(w, "\nquarantined %s since %s: %s\n  %s\n", q.Cluster, fmtTime(q.At), q.Reason, e.describe(now))
		for _, p := range e.Pending {
			fmt.Fprintf(w, "  %s: %s\n", p.Cluster, p.Detail)
		}
	}
}
