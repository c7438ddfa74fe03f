package server_test

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// newServiceOnly is an authority over a fresh store, without a server.
func newServiceOnly(t *testing.T) (*ca.Service, store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// nobody is the uid (and gid) that plays the other local user.
const nobody = 65534

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates files and processes of another uid")
	}
}

// sharedTemp returns a fresh folder that other users can enter (mode 0755).
func sharedTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "meshroot-socket-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSocketFolderMustBeOurs: the server will not listen, and the CLI's
// check will not dial, in a socket folder that another user created, that
// others can write to or read, or that is a symbolic link; each refusal
// says what to fix. Before the fix the folder was used as found.
func TestSocketFolderMustBeOurs(t *testing.T) {
	requireRoot(t)
	base := sharedTemp(t)
	mine := filepath.Join(base, "mine")
	if err := os.Mkdir(mine, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"other-owner", func(dir string) error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.Chown(dir, nobody, nobody)
		}, "owned by uid 65534, not by you (uid 0)"},
		{"group-and-other-bits", func(dir string) error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.Chmod(dir, 0o755)
		}, "has mode 0755: other users could replace the socket; run `chmod 700"},
		{"symlink", func(dir string) error { return os.Symlink(mine, dir) }, "is a symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, tc.name)
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "admin.sock")
			if err := server.CheckSocketDir(sock); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckSocketDir: %v, want %q", err, tc.want)
			}
			svc, st := newServiceOnly(t)
			srv, err := server.NewServer(server.ServerConfig{
				Service: svc, Store: st, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", AdminSocket: sock,
			})
			if srv != nil {
				t.Fatal("server built")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewServer: %v, want %q", err, tc.want)
			}
		})
	}
	if err := server.CheckSocketDir(filepath.Join(mine, "admin.sock")); err != nil {
		t.Errorf("our own 0700 folder: %v", err)
	}
}

// listenEnv makes this test binary the other user's socket server.
const listenEnv = "MESHROOT_TEST_LISTEN"

// TestListenAsOtherUser is not a test: run by TestClientRefusesServerOfAnotherUser
// as uid 65534, it listens on the socket named in listenEnv until stdin closes.
func TestListenAsOtherUser(t *testing.T) {
	path := os.Getenv(listenEnv)
	if path == "" {
		t.Skip("only runs as the helper of TestClientRefusesServerOfAnotherUser")
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("LISTENING\n")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	io.Copy(io.Discard, os.Stdin)
}

// TestClientRefusesServerOfAnotherUser: a socket served by another uid and
// moved into our own folder (what a local user who once owned the folder
// could do) is refused by the client's SO_PEERCRED check, with the uid.
func TestClientRefusesServerOfAnotherUser(t *testing.T) {
	requireRoot(t)
	base := sharedTemp(t)
	// The test binary, where uid 65534 can run it.
	exe := filepath.Join(base, "server.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(base, "theirs")
	if err := os.Mkdir(theirs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestListenAsOtherUser$")
	cmd.Env = append(os.Environ(), listenEnv+"="+filepath.Join(theirs, "admin.sock"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	buf := make([]byte, 10)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "LISTENING\n" {
		t.Fatalf("helper did not listen: %q, %v", buf, err)
	}
	go io.Copy(io.Discard, out)

	mine := filepath.Join(base, "mine")
	if err := os.Mkdir(mine, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(mine, "admin.sock")
	if err := os.Rename(filepath.Join(theirs, "admin.sock"), sock); err != nil {
		t.Fatal(err)
	}
	if err := server.CheckSocketDir(sock); err != nil {
		t.Fatalf("the folder itself is ours: %v", err)
	}
	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = meshrootv1.NewAdminClient(conn).ListRoots(ctx, &meshrootv1.ListRootsRequest{})
	if err == nil || !strings.Contains(err.Error(), "served by uid 65534") || !strings.Contains(err.Error(), "not by you (uid 0)") {
		t.Fatalf("call to another user's socket: %v, want a refusal naming uid 65534", err)
	}
}
