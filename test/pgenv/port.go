package pgenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// stablePort returns a free loopback port for a PostgreSQL server, which
// Restart stops and starts again on the same port. It lies below
// the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range),
// from which every socket bound to port 0 (another test's server, an
// outgoing connection) is given its port: a port picked from that range
// was seen taken by another test's server in the two seconds of an
// apiserver's restart (test/kube/kubeenv, a separate module, has the same
// function).
func stablePort() (int, error) {
	const floor = 10000 // above the well-known ports of the machine's own services
	top := ephemeralLow()
	for range 200 {
		if top-floor < 1000 {
			break
		}
		p := floor + rand.IntN(top-floor)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // taken
		}
		_ = l.Close()
		return p, nil
	}
	return freePort()
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 {
		return 32768
	}
	return n
}
