package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/cmd/internal/agentcmd"
)

// globals are the flags every command shares.
type globals struct {
	dataDir           string
	output            string
	passphraseFile    string
	insecurePlaintext bool
	socket            string
	keys              keysConfig
	// remote and adminCert reach a server's remote admin listener (mTLS)
	// instead of its admin socket.
	remote, adminCert string
}

// socketSet reports whether the admin socket was chosen explicitly.
func (g *globals) socketSet(cmd *cobra.Command) bool {
	return cmd.Root().PersistentFlags().Changed("socket")
}

// dataDirSet reports whether a data dir was chosen explicitly (flag or
// MESHROOT_DATA_DIR): the CLI then works on it directly instead of asking
// the server.
func (g *globals) dataDirSet(cmd *cobra.Command) bool {
	return cmd.Root().PersistentFlags().Changed("data-dir")
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	cmd := &cobra.Command{
		Use:           "meshroot",
		Short:         "One root of trust for many service meshes",
		Long:          "meshroot creates and keeps the root CA of a trust domain and issues each cluster's istiod a pathlen-0 intermediate as the Istio cacerts.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", defaultDataDir(), "folder that holds the state database and keys (env MESHROOT_DATA_DIR)")
	pf.StringVarP(&g.output, "output", "o", "", "output format: table (default) or json; some commands take others (env MESHROOT_OUTPUT)")
	pf.StringVar(&g.passphraseFile, "passphrase-file", "", "file holding the passphrase that encrypts disk keys (or env MESHROOT_PASSPHRASE)")
	pf.BoolVar(&g.insecurePlaintext, "insecure-plaintext-key", false, "store new disk keys unencrypted: development only")
	pf.StringVar(&g.keys.Create, "key", "disk", "where new root keys go: disk, pkcs11:module-path=...;token=...?pin-source=FILE, vault-transit://MOUNT, softkms:dir=..., or a cloud KMS URI (awskms:..., cloudkms:..., azurekms:...); also names the PKCS#11 module and the cloud KMS account used for existing keys, which a stored reference never chooses")
	pf.StringVar(&g.keys.Vault.Address, "vault-addr", "", "Vault address, for vault-transit keys and the vault-pki upstream (env MESHROOT_VAULT_ADDR)")
	pf.StringVar(&g.keys.Vault.CAFile, "vault-ca-file", "", "CA bundle that verifies Vault's TLS certificate")
	pf.StringVar(&g.keys.Vault.AuthMethod, "vault-auth", "token", "Vault login: token, approle or kubernetes")
	pf.StringVar(&g.keys.Vault.TokenFile, "vault-token-file", "", "file holding a Vault token (--vault-auth token)")
	pf.StringVar(&g.keys.Vault.RoleID, "vault-role-id", "", "AppRole role_id (--vault-auth approle)")
	pf.StringVar(&g.keys.Vault.SecretIDFile, "vault-secret-id-file", "", "file holding the AppRole secret_id")
	pf.StringVar(&g.keys.Vault.Role, "vault-role", "", "Vault Kubernetes auth role (--vault-auth kubernetes)")
	pf.StringVar(&g.keys.Vault.JWTFile, "vault-jwt-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "service-account token for --vault-auth kubernetes")
	pf.StringVar(&g.remote, "server", "", "`HOST:PORT` of a server's remote admin listener (adminListen): the CLI talks to it over mTLS with --admin-cert instead of the admin socket (env MESHROOT_SERVER)")
	pf.StringVar(&g.adminCert, "admin-cert", "", "the `DIR` that meshroot admin cert issue --out wrote (cert.pem, key.pem, trust-bundle.pem), for --server (env MESHROOT_ADMIN_CERT)")
	pf.StringVar(&g.keys.StepCA.KeyFile, "step-ca-key-file", "", "step-ca upstream: the JWK provisioner's private key (PEM)")
	pf.StringVar(&g.keys.StepCA.ServerKeyFile, "step-ca-server-key-file", "", "step-ca upstream: the server CA provisioner's private key (PEM)")
	pf.StringVar(&g.keys.StepCA.PasswordFile, "step-ca-password-file", "", "step-ca upstream: file holding the password of the provisioner key")
	pf.StringVar(&g.keys.Plugin, "plugin", "", "the meshroot-plugin binary, which runs cloud KMS keys and the step-ca upstream (default: meshroot-plugin next to meshroot, then in $PATH)")
	pf.StringVar(&g.socket, "socket", defaultSocket(), "the server's admin socket; the CLI talks to the server through it unless --data-dir is given (env MESHROOT_SOCKET)")

	cmd.AddCommand(
		newRootGroupCmd(g),
		newClusterCmd(g),
		newIntermediateCmd(g),
		newBundleCmd(g),
		newAuditCmd(g),
		newVersionCmd(g),
		newServeCmd(g),
		agentcmd.New("agent"),
		newTokenCmd(g),
		newFederationCmd(g),
		newPolicyCmd(g),
		newStoreCmd(g),
		newAdminCmd(g),
		newDocsCmd(),
	)
	refuseUnknownSubcommands(cmd)
	return cmd
}

// refuseUnknownSubcommands makes every command group fail with a usage error
// on an unknown subcommand, where cobra would print help and exit 0 (so a
// script's `meshroot audit verfy || alert` would never alert).
func refuseUnknownSubcommands(cmd *cobra.Command) {
	if !cmd.HasSubCommands() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		return usageError{fmt.Errorf("unknown command %q for %q (see %s --help)", args[0], c.CommandPath(), c.CommandPath())}
	}
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
}

// applyEnv sets every flag the user did not give from MESHROOT_<FLAG> in the
// environment (dashes become underscores). MESHROOT_PASSPHRASE is read
// separately and never becomes a flag.
var applyEnv = agentcmd.ApplyEnv

// defaultSocket is $XDG_RUNTIME_DIR/meshroot/admin.sock, else
// /tmp/meshroot-<uid>/admin.sock.
func defaultSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "meshroot", "admin.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("meshroot-%d", os.Getuid()), "admin.sock")
}

// defaultDataDir is $XDG_DATA_HOME/meshroot, else ~/.local/share/meshroot,
// else ./meshroot-data.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return d + "/meshroot"
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return h + "/.local/share/meshroot"
	}
	return "./meshroot-data"
}

// outputFormat validates -o against the formats a command takes; the first
// is the default.
func (g *globals) outputFormat(allowed ...string) (string, error) {
	if g.output == "" {
		return allowed[0], nil
	}
	for _, a := range allowed {
		if g.output == a {
			return a, nil
		}
	}
	return "", usageError{fmt.Errorf("output format %q is not supported here: use %s", g.output, strings.Join(allowed, ", "))}
}
