package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres"
	"github.com/meshroot/meshroot/store/sqlite"
)

// maxDSNFile bounds a file holding a database DSN.
const maxDSNFile = 4 << 10

// openStore opens the state store: PostgreSQL when dsn is a postgres://
// URL, else (dsn empty) the SQLite database in dataDir.
func openStore(ctx context.Context, dsn, dataDir string) (store.Store, error) {
	switch {
	case dsn == "":
		return sqlite.Open(ctx, filepath.Join(dataDir, dbFile))
	case postgres.IsDSN(dsn):
		return postgres.Open(ctx, dsn)
	}
	// Not echoed: it may hold a password.
	return store.Store{}, usageError{errors.New("store: the DSN is not a postgres:// or postgresql:// URL (leave it empty for SQLite in the data dir)")}
}

// storeDSN returns the DSN given directly or, when file is set, read from
// file (a mounted Kubernetes Secret, say). A file that other users can read
// is refused; group read is allowed, as a Secret mounted with fsGroup needs.
func storeDSN(dsn, file string) (string, error) {
	if file == "" {
		return dsn, nil
	}
	if dsn != "" {
		return "", usageError{errors.New("store and storeFile (--store, --store-file) both given: choose one")}
	}
	info, err := os.Stat(file)
	if err != nil {
		return "", usageError{fmt.Errorf("store file: %w", err)}
	}
	if info.Mode().Perm()&0o007 != 0 {
		return "", usageError{fmt.Errorf("store file %s has mode %04o: others may read the database password in it; make it readable by its owner (and group) only (chmod 640 %s, or defaultMode: 0440 for a Secret)", file, info.Mode().Perm(), file)}
	}
	b, err := readBounded(file, maxDSNFile)
	if err != nil {
		return "", usageError{fmt.Errorf("store file: %w", err)}
	}
	dsn = strings.TrimSpace(string(b))
	if dsn == "" {
		return "", usageError{fmt.Errorf("store file %s is empty: it should hold a postgres:// URL", file)}
	}
	return dsn, nil
}

func newStoreCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Move the state store between SQLite and PostgreSQL",
	}
	cmd.AddCommand(newStoreMigrateCmd(g))
	return cmd
}

func newStoreMigrateCmd(g *globals) *cobra.Command {
	var from, to, toFile string
	cmd := &cobra.Command{
		Use:   "migrate --from DATADIR (--to postgres://... | --to-file FILE)",
		Short: "Copy a SQLite data dir's state into an empty PostgreSQL database and verify the copy",
		Long: `Copy a SQLite data dir's state into an empty PostgreSQL database and verify
the copy.

Stop the servers using the data dir first. The copy runs in one transaction:
before it commits, every table must hold as many rows as in the data dir and
the copied audit chain must verify against its head; otherwise nothing lands.
A destination that holds any state is refused. The copy is recorded in the
copied audit log (store.migrate). Keys are not in the database: disk keys stay
in DATADIR/keys, so point the servers' --data-dir (or a key Secret) at them.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return usageError{errors.New("--from DATADIR is required: the SQLite data dir to copy")}
			}
			dsn, err := storeDSN(to, toFile)
			if err != nil {
				return err
			}
			if !postgres.IsDSN(dsn) {
				return usageError{errors.New("--to (or --to-file) must give a postgres:// URL")}
			}
			return runStoreMigrate(cmd, from, dsn)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "SQLite data dir to copy (holding meshroot.db)")
	fl.StringVar(&to, "to", "", "destination database: postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=FILE")
	fl.StringVar(&toFile, "to-file", "", "file holding the destination DSN (not readable by others)")
	return cmd
}

func runStoreMigrate(cmd *cobra.Command, from, dsn string) error {
	ctx := cmd.Context()
	abs, err := filepath.Abs(from)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(abs, dbFile)); errors.Is(err, fs.ErrNotExist) {
		return usageError{fmt.Errorf("data dir %s holds no meshroot state (%s): check --from", abs, dbFile)}
	}
	src, err := sqlite.OpenForCopy(ctx, filepath.Join(abs, dbFile))
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := postgres.OpenForCopy(ctx, dsn)
	if err != nil {
		return err
	}
	defer dst.Close()
	target := postgres.Redact(dsn)
	counts, err := dst.CopyFrom(ctx, src, store.AuditEntry{
		Actor: string(localActor()), Action: "store.migrate", Target: target, Result: "ok",
		Details: migrateDetails(abs),
	})
	if err != nil {
		return err
	}
	// Read back, in a new snapshot, what was committed.
	n, err := dst.VerifyAuditRows(ctx)
	if err != nil {
		return fmt.Errorf("the copy committed but its audit log does not verify: %w", err)
	}
	rows := make([][]string, 0, len(postgres.CopiedTables))
	for _, table := range postgres.CopiedTables {
		rows = append(rows, []string{table, strconv.FormatInt(counts[table], 10)})
	}
	if err := printTable(cmd.OutOrStdout(), []string{"TABLE", "ROWS COPIED"}, rows); err != nil {
		return err
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "copied %s into %s: row counts match, audit chain verified (%d entries, the last one this copy's store.migrate)\n", abs, target, n)
	return err
}

// migrateDetails is the store.migrate entry's details.
func migrateDetails(from string) string {
	b, _ := json.Marshal(map[string]string{"from": from})
	return string(b)
}
