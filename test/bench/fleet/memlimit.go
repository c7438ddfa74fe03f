package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// memLimit sets this process's soft memory limit to three quarters of the
// machine's memory, unless GOMEMLIMIT says otherwise, and returns it (0
// when unknown). Every in-process agent holds the fleet's CRL set and
// its caches, and its in-memory API server a Secret with the fleet's
// ca-crl.pem: 1,000 agents held 7.3 GB live at 1,000 clusters (12.8 GB
// before the agent's caches were trimmed; docs/performance.md), and with
// the collector's default headroom (GOGC=100) they would need twice that.
// The limit makes the collector run more often instead (its CPU is in the
// agents' CPU figures); a real agent holds one cluster's share.
func memLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	total := memTotal()
	if total <= 0 {
		return 0
	}
	debug.SetMemoryLimit(total / 4 * 3)
	return total / 4 * 3
}

// watchMemory stops the bench when this process's RSS passes 90 % of the
// machine's memory, before the kernel's OOM killer picks a process (the
// server it started dies with it: Pdeathsig).
func watchMemory() {
	total := memTotal()
	if total <= 0 {
		return
	}
	go func() {
		for range time.Tick(2 * time.Second) {
			if m, err := readMem(os.Getpid()); err == nil && m.rss > total/10*9 {
				fmt.Fprintf(os.Stderr, "bench stopped: its RSS %.1f GiB passed 90 %% of the machine's memory\n", float64(m.rss)/(1<<30))
				os.Exit(3)
			}
		}
	}()
}

// memTotal is the machine's memory in bytes, from /proc/meminfo (0 when
// unknown).
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
