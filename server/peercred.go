package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

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
// mode (0600); the uid goes into the audit log.
func UnixPeerCredentials() credentials.TransportCredentials { return unixPeerCreds{} }

type unixPeerCreds struct{}

func (unixPeerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, PeerCredAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (unixPeerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("admin API: not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, nil, err
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("admin API: peer credentials: %w", credErr)
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
