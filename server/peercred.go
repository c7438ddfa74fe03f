package server

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerCredAuthInfo identifies the local process on the other end of the
// admin unix socket, from the kernel (SO_PEERCRED), not from anything the
// client says.
type PeerCredAuthInfo struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	PID      int32
}

// AuthType implements credentials.AuthInfo.
func (PeerCredAuthInfo) AuthType() string { return "unix-peercred" }

// UnixPeerCredentials are gRPC transport credentials for a unix socket that
// record the peer's uid, gid and pid. Access control is the socket file's
// mode (0600) in a folder only its owner can enter (CheckSocketDir); the uid
// goes into the audit log. As a client they refuse a server that runs as
// another user than the caller's effective uid (SO_PEERCRED), so a socket
// put in place by someone else is never talked to.
func UnixPeerCredentials() credentials.TransportCredentials { return unixPeerCreds{} }

type unixPeerCreds struct{}

func (unixPeerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if err := checkServerUID(c); err != nil {
		return nil, nil, err
	}
	return c, PeerCredAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (unixPeerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("admin API: not a unix socket connection")
	}
	cred, err := peerCred(uc)
	if err != nil {
		return nil, nil, err
	}
	return c, PeerCredAuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		UID:            cred.Uid, GID: cred.Gid, PID: cred.Pid,
	}, nil
}

func (unixPeerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}
func (c unixPeerCreds) Clone() credentials.TransportCredentials { return c }
func (unixPeerCreds) OverrideServerName(string) error           { return nil }

// adminActor names the caller of an admin call for the audit log.
func adminActor(ctx context.Context) string {
	if a := remoteAdminActor(ctx); a != "" {
		return a
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "admin:unknown"
	}
	switch ai := p.AuthInfo.(type) {
	case PeerCredAuthInfo:
		return fmt.Sprintf("admin:uid=%d,pid=%d", ai.UID, ai.PID)
	case credentials.TLSInfo:
		if len(ai.State.PeerCertificates) > 0 {
			return "admin:cn=" + ai.State.PeerCertificates[0].Subject.CommonName
		}
	}
	return "admin:unknown"
}
