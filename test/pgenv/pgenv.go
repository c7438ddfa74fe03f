// Package pgenv runs a private PostgreSQL server for one test: initdb into
// a temporary folder, pg_ctl on a free 127.0.0.1 port with trust
// authentication and its unix socket in that folder. A test that must stop
// or restart the database (a crash, a failover) uses this instead of the
// machine's shared server, which other tests and sessions use.
//
// The binaries are the newest /usr/lib/postgresql/*/bin (Debian's
// postgresql package), or the folder named by MESHROOT_TEST_PG_BIN. When
// the test runs as root, the server runs as user postgres (PostgreSQL
// refuses to run as root), through runuser. The server is stopped and its
// folder removed when the test ends.
package pgenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvBin names the environment variable that overrides the binaries' folder.
const EnvBin = "MESHROOT_TEST_PG_BIN"

// Server is one private PostgreSQL server.
type Server struct {
	// Dir holds the data folder (Dir/data), the log and the socket.
	Dir  string
	Port int
	bin  string
	run  []string // prefix running a command as the server's user
}

// Start initialises and starts a server for t, stopped (immediately) and
// removed when t ends. It fails t, saying what it needs, when PostgreSQL's
// server binaries are not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parents are 0700 root-owned, which user postgres
	// cannot enter.
	dir, err := os.MkdirTemp("", "pgenv")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir, bin: bin}
	t.Cleanup(func() {
		s.pgctl("stop", "-m", "immediate", "-w", "-t", "30")
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgenv: running as root, and there is no user postgres to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		s.run = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := s.cmd(filepath.Join(bin, "initdb"), "-D", s.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("pgenv: initdb: %v\n%s", err, out)
	}
	if s.Port, err = stablePort(); err != nil {
		t.Fatal(err)
	}
	s.Start(t)
	return s
}

// binDir finds PostgreSQL's server binaries.
func binDir() (string, error) {
	if d := os.Getenv(EnvBin); d != "" {
		return d, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(found) == 0 {
		return "", fmt.Errorf("pgenv: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install the postgresql package (apt-get install postgresql), or set %s to the folder holding initdb and pg_ctl", EnvBin)
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) < version(found[j]) })
	return filepath.Dir(found[len(found)-1]), nil
}

// version is the major version in /usr/lib/postgresql/N/bin/pg_ctl.
func version(path string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return n
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.Dir, "data") }

func (s *Server) cmd(name string, args ...string) *exec.Cmd {
	full := append(append(append([]string{}, s.run...), name), args...)
	c := exec.Command(full[0], full[1:]...)
	c.Dir = s.Dir
	return c
}

func (s *Server) pgctl(args ...string) ([]byte, error) {
	full := append([]string{"-D", s.dataDir()}, args...)
	return s.cmd(filepath.Join(s.bin, "pg_ctl"), full...).CombinedOutput()
}

// Start starts the (stopped) server and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c max_connections=200 -c shared_buffers=32MB", s.Port, s.Dir)
	if out, err := s.pgctl("start", "-w", "-t", "60", "-l", filepath.Join(s.Dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
		t.Fatalf("pgenv: pg_ctl start: %v\n%s\nserver log:\n%s", err, out, log)
	}
}

// Stop stops the server with pg_ctl's mode: "fast" (sessions are ended,
// a clean shutdown) or "immediate" (the server is killed; it recovers from
// its WAL at the next start, as after a crash).
func (s *Server) Stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := s.pgctl("stop", "-m", mode, "-w", "-t", "60"); err != nil {
		t.Fatalf("pgenv: pg_ctl stop -m %s: %v\n%s", mode, err, out)
	}
}

// Restart stops the server with mode (see Stop) and starts it again.
func (s *Server) Restart(t testing.TB, mode string) {
	t.Helper()
	s.Stop(t, mode)
	s.Start(t)
}

// DSN is the URL of database name on this server, as user postgres.
func (s *Server) DSN(name string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), Path: "/" + name, RawQuery: "sslmode=disable"}
	return u.String()
}

// NewDatabase creates database name (a plain identifier) and returns its DSN.
func (s *Server) NewDatabase(t testing.TB, name string) string {
	t.Helper()
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		t.Fatalf("pgenv: database name %q: use lower-case letters, digits and _", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgenv: connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgenv: create database %s: %v", name, err)
	}
	return s.DSN(name)
}
