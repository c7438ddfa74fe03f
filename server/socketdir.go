package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// CheckSocketDir checks that the folder holding the admin socket at path
// can be trusted: a real directory (not a symbolic link), owned by the
// effective user, with no permission bits for group or others. Anyone else
// who owns or can write to that folder could replace the socket with their
// own, and the CLI would send them kubeconfigs and accept their chains.
// Both the server (before it listens) and the CLI (before it dials) call it.
func CheckSocketDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("admin socket folder %s: %w", dir, err)
	}
	return checkSocketDirInfo(dir, fi, os.Geteuid())
}

func checkSocketDirInfo(dir string, fi fs.FileInfo, euid int) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("admin socket folder %s is a symbolic link: refusing to trust it; remove it (or pass a socket path in a folder of your own)", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("admin socket folder %s is not a directory: remove it", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("admin socket folder %s: cannot read its owner", dir)
	}
	if int(st.Uid) != euid {
		return fmt.Errorf("admin socket folder %s is owned by uid %d, not by you (uid %d): someone else may have created it to serve a socket of their own; remove it (as root if need be) and start the server again", dir, st.Uid, euid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("admin socket folder %s has mode %04o: other users could replace the socket; run `chmod 700 %s`", dir, perm, dir)
	}
	return nil
}

// prepareSocketDir creates the admin socket's folder (mode 0700) when it is
// missing and checks it with CheckSocketDir.
func prepareSocketDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("server: admin socket folder: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("server: admin socket folder: %w", err)
	}
	if err := CheckSocketDir(path); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// checkServerUID checks, from the kernel (SO_PEERCRED), that the process
// serving the unix connection c runs as the effective user: a server of
// another user is refused, whatever the socket's path. (root talks to a
// server running as root only.)
func checkServerUID(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("admin API: not a unix socket connection")
	}
	cred, err := peerCred(uc)
	if err != nil {
		return err
	}
	if euid := os.Geteuid(); int(cred.Uid) != euid {
		return fmt.Errorf("the admin socket is served by uid %d (pid %d), not by you (uid %d): refusing to talk to it; check who created the socket and its folder, or pass --socket for a server of your own", cred.Uid, cred.Pid, euid)
	}
	return nil
}

// peerCred returns the credentials of the process at the other end of uc.
func peerCred(uc *net.UnixConn) (*syscall.Ucred, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("admin API: peer credentials: %w", credErr)
	}
	return cred, nil
}
