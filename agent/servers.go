package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// maxServers bounds the server addresses an agent takes.
const maxServers = 16

// roundRobin spreads calls over every server address that answers: a
// replica that is down or stopped answering (its connection failed, or
// keepalive gave up on it) is skipped until it is back, and a watch that
// breaks is reopened on a replica that is up.
const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// listScheme is the resolver scheme of an explicit list of servers; each
// client registers its own resolver under it (grpc.WithResolvers).
const listScheme = "meshroot-servers"

// ParseServers splits server addresses given as repeated flags or comma
// lists into host:port entries, refusing empty or malformed ones and
// dropping repeats.
func ParseServers(in []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, v := range in {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			host, port, err := net.SplitHostPort(s)
			if err != nil || host == "" || port == "" {
				return nil, fmt.Errorf("server address %q: want host:port (several: repeat --server or separate them with commas)", s)
			}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no server address: give at least one host:port")
	}
	if len(out) > maxServers {
		return nil, fmt.Errorf("%d server addresses: at most %d are taken (put the replicas behind one DNS name instead)", len(out), maxServers)
	}
	return out, nil
}

// target is what the agent dials for servers and the options that make
// it one channel over all of them. One address goes through gRPC's DNS
// resolver, so a name that resolves to several replicas (a headless
// Service) gives one subchannel per replica, re-resolved when one fails.
// Several addresses go through a fixed list resolver, each one keeping its
// own host name for TLS.
func target(servers []string) (string, []grpc.DialOption) {
	opts := []grpc.DialOption{grpc.WithDefaultServiceConfig(roundRobin)}
	if len(servers) == 1 {
		return "dns:///" + servers[0], opts
	}
	r := manual.NewBuilderWithScheme(listScheme)
	var st resolver.State
	for _, s := range servers {
		host, _, _ := net.SplitHostPort(s)
		st.Addresses = append(st.Addresses, resolver.Address{Addr: s, ServerName: host})
	}
	r.InitialState(st)
	return listScheme + ":///replicas", append(opts, grpc.WithResolvers(r))
}

// hostCreds is TLS whose configuration depends on the server's host name:
// with several servers each connection verifies the name of the address it
// was made to (gRPC hands it over as the authority).
type hostCreds struct {
	credentials.TransportCredentials // Info, and ServerHandshake (unused)
	config                           func(host string) *tls.Config
}

func newHostCreds(config func(host string) *tls.Config) credentials.TransportCredentials {
	return &hostCreds{TransportCredentials: credentials.NewTLS(&tls.Config{}), config: config}
}

// ClientHandshake runs TLS with the configuration for authority's host.
func (c *hostCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host, _, err := net.SplitHostPort(authority)
	if err != nil {
		host = authority
	}
	return credentials.NewTLS(c.config(host)).ClientHandshake(ctx, authority, raw)
}

// Clone returns a copy.
func (c *hostCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}
