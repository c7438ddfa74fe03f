package main

import (
	"fmt"
	"io"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// printReplicas ends `root status` with the servers sharing the store and
// which one leads (the one running federation watchers, CRL re-signing
// and housekeeping).
func printReplicas(w io.Writer, reps []ca.ReplicaStatus) error {
	if len(reps) == 0 {
		_, err := fmt.Fprintln(w, "\nleader: the only server (a SQLite store serves one server, which always leads)")
		return err
	}
	leader := "none: no server leads now (an election takes a few seconds; see docs/ha.md)"
	var rows [][]string
	for _, r := range reps {
		role := "follower"
		switch {
		case r.Leader && r.HeartbeatAge <= ca.LeaderStale:
			role, leader = "leader", r.ID
		case r.Leader:
			role = "leader, not answering"
		case r.HeartbeatAge > ca.LeaderStale:
			role = "gone"
		}
		rows = append(rows, []string{r.ID, role, r.HeartbeatAge.Round(time.Millisecond).String() + " ago", fmtTime(r.StartedAt)})
	}
	fmt.Fprintf(w, "\nleader: %s\n", leader)
	return printTable(w, []string{"REPLICA", "ROLE", "LAST HEARTBEAT", "STARTED"}, rows)
}
