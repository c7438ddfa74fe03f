package main

// The database server's CPU per call: a PostgreSQL row's CPU/call counts
// this process only, while the SQLite row's includes the database work
// (SQLite runs in the process). When the server runs on this machine, the
// CPU its backends serving the row's database used (/proc/PID/stat) is
// added as DB CPU/call, so that the rows' cost per call compares.

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// backendCPU returns the CPU the server's backends connected to database
// name have used so far, and false when it cannot be read (a server on
// another machine, or not readable).
func backendCPU(ctx context.Context, adminDSN, name string) (time.Duration, bool) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, adminDSN)
	if err != nil {
		return 0, false
	}
	defer conn.Close(cctx)
	rows, err := conn.Query(cctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1`, name)
	if err != nil {
		return 0, false
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil || len(pids) == 0 {
		return 0, false
	}
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
		if err != nil {
			return 0, false
		}
		// Fields after the command (which may hold spaces) in
		// parentheses: utime and stime are the 12th and 13th.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return 0, false
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(u+st) * clockTick
	}
	return total, true
}
