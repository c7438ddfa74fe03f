package kubeenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// stablePort returns a free loopback port for an apiserver, which
// StopAPIServer and StartAPIServer stop and start again on the same
// port. It lies below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), from which every socket
// bound to port 0 (another test's server, an outgoing connection) is given
// its port: a port picked from that range was seen taken by another
// test's server in the two seconds of a restart, and the apiserver could
// not bind it again. (test/pgenv has the same function for PostgreSQL's
// restarts: the two are separate modules.)
func stablePort() (string, error) {
	const floor = 10000 // above the well-known ports of the machine's own services
	top := ephemeralLow()
	for range 200 {
		if top-floor < 1000 {
			break
		}
		p := strconv.Itoa(floor + rand.IntN(top-floor))
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p))
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
