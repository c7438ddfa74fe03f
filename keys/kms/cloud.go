package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/internal/stepkms"
)

// openKMS constructs a step KMS client. Tests replace it so that no cloud
// client, and no credential lookup, is ever made.
var openKMS = func(ctx context.Context, o apiv1.Options) (apiv1.KeyManager, error) {
	fn, ok := apiv1.LoadKeyManagerNewFunc(o.Type)
	if !ok {
		return nil, fmt.Errorf("KMS type %s is not compiled into this binary", o.Type)
	}
	return fn(ctx, o)
}

var (
	keyRingPattern = regexp.MustCompile(`^projects/[a-z0-9-]+/locations/[a-z0-9-]+/keyRings/[a-zA-Z0-9_-]{1,63}$`)
	// Cloud KMS crypto key ids and Key Vault key names allow fewer characters.
	cloudKeyName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	azureKeyName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// cloudBackend is AWS KMS, Google Cloud KMS or Azure Key Vault through
// step's kms. The client is created on first use.
type cloudBackend struct {
	typ      apiv1.Type
	service  string // "AWS KMS", for messages
	where    string // "region eu-west-1", "key ring ...", "vault ..."
	hint     string // what to check when the KMS cannot be used
	stepOpts apiv1.Options
	keyRing  string // cloudkms
	vault    string // azurekms
	level    apiv1.ProtectionLevel
	open     func(context.Context, apiv1.Options) (apiv1.KeyManager, error)

	mu  sync.Mutex
	kms apiv1.KeyManager
}

// allowedAttrs are the URI attributes each cloud KMS understands.
var allowedAttrs = map[apiv1.Type][]string{
	apiv1.AmazonKMS: {"region", "profile", "credentials-file"},
	apiv1.CloudKMS:  {"key-ring", "credentials-file", "protection-level"},
	apiv1.AzureKMS:  {"vault", "environment", "hsm", "client-id", "client-secret", "tenant-id", "aad-endpoint"},
}

func newCloud(typ apiv1.Type, raw string, u *uri.URI) (*cloudBackend, error) {
	label := string(typ) + " key manager"
	if _, ok := apiv1.LoadKeyManagerNewFunc(typ); !ok {
		return nil, fmt.Errorf("%s: this binary lacks %s support: cloud KMS keys are used through meshroot-plugin (docs/keys.md)", label, typ)
	}
	c := &cloudBackend{typ: typ, open: openKMS, stepOpts: apiv1.Options{Type: typ}}
	switch typ {
	case apiv1.AmazonKMS:
		c.service = "AWS KMS"
		c.where = "the default region"
		if r := u.Get("region"); r != "" {
			c.where = "region " + r
		}
		c.hint = "check network access to AWS KMS in " + c.where + ", and the AWS credentials (profile, credentials-file, environment or instance role) and their kms:CreateKey, kms:GetPublicKey and kms:Sign permissions"
		c.stepOpts.URI = raw
	case apiv1.CloudKMS:
		c.service = "Google Cloud KMS"
		c.keyRing = u.Get("key-ring")
		if !keyRingPattern.MatchString(c.keyRing) {
			return nil, fmt.Errorf("%s: the URI needs key-ring=projects/PROJECT/locations/LOCATION/keyRings/RING", label)
		}
		c.where = "key ring " + c.keyRing
		switch l := u.Get("protection-level"); strings.ToLower(l) {
		case "", "software":
			c.level = apiv1.Software
		case "hsm":
			c.level = apiv1.HSM
		default:
			return nil, fmt.Errorf("%s: protection-level %q is invalid: use software or hsm", label, l)
		}
		c.hint = "check network access to Cloud KMS, and the Google credentials (credentials-file or GOOGLE_APPLICATION_CREDENTIALS) and their roles on " + c.where
		if f := u.Get("credentials-file"); f != "" {
			c.stepOpts.URI = uri.New(CloudKMS, url.Values{"credentials-file": {f}}).String()
		}
	case apiv1.AzureKMS:
		c.service = "Azure Key Vault"
		c.vault = u.Get("vault")
		if c.vault == "" {
			return nil, fmt.Errorf("%s: the URI needs vault=NAME (the Key Vault's name)", label)
		}
		c.where = "vault " + c.vault
		c.hint = "check network access to Key Vault " + c.vault + ", and the Azure credentials (client-id/tenant-id/client-secret, environment or managed identity) and their key permissions (create, get, sign)"
		c.stepOpts.URI = raw
	}
	var unknown []string
	for k := range uri.Values(u) {
		ok := false
		for _, a := range allowedAttrs[typ] {
			ok = ok || a == k
		}
		if !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%s: URI has unknown attributes %s: allowed are %s", label, strings.Join(unknown, ", "), strings.Join(allowedAttrs[typ], ", "))
	}
	return c, nil
}

func (c *cloudBackend) label() string { return string(c.typ) + " key manager" }

// client returns the step KMS client, creating it on first use.
func (c *cloudBackend) client(ctx context.Context, what string) (apiv1.KeyManager, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c.label(), what, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kms != nil {
		return c.kms, nil
	}
	k, err := c.open(ctx, c.stepOpts)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: cannot set up the %s client: %v: %s", c.label(), what, c.service, err, c.hint)
	}
	c.kms = k
	return k, nil
}

// fail wraps an error from the KMS, naming the backend and what to check.
func (c *cloudBackend) fail(what string, err error) error {
	return fmt.Errorf("%s: %s in %s (%s): %v: %s", c.label(), what, c.service, c.where, err, c.hint)
}

// keyName is the step kms name under which name is created.
func (c *cloudBackend) keyName(name string) string {
	switch c.typ {
	case apiv1.CloudKMS:
		return uri.NewOpaque(CloudKMS, c.keyRing+"/cryptoKeys/"+name).String()
	case apiv1.AzureKMS:
		return uri.New(AzureKMS, url.Values{"vault": {c.vault}, "name": {name}}).String()
	}
	return name // AWS: the key's description, tag and alias prefix
}

func (c *cloudBackend) checkName(name string) error {
	if err := checkName(string(c.typ), name); err != nil {
		return err
	}
	switch {
	case c.typ == apiv1.CloudKMS && !cloudKeyName.MatchString(name):
		return fmt.Errorf("%s: key name %q is invalid for Cloud KMS: use a-z 0-9 _ - only", c.label(), name)
	case c.typ == apiv1.AzureKMS && !azureKeyName.MatchString(name):
		return fmt.Errorf("%s: key name %q is invalid for Key Vault: use a-z 0-9 - only", c.label(), name)
	case c.typ == apiv1.AmazonKMS && strings.Contains(name, "."):
		return fmt.Errorf("%s: key name %q is invalid for an AWS KMS alias: use a-z 0-9 _ - only", c.label(), name)
	}
	return nil
}

func (c *cloudBackend) createKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	if err := c.checkName(name); err != nil {
		return keys.Key{}, err
	}
	alg, bits, err := stepkms.SignatureAlgorithm(c.label(), kt)
	if err != nil {
		return keys.Key{}, err
	}
	what := fmt.Sprintf("create %s key %s", kt, name)
	k, err := c.client(ctx, what)
	if err != nil {
		return keys.Key{}, err
	}
	// Cloud KMS and Key Vault add a version to an existing key instead of
	// failing: look first. AWS KMS has no unique key names to look up.
	if existing := c.existingName(name); existing != "" {
		_, err := k.GetPublicKey(&apiv1.GetPublicKeyRequest{Name: existing})
		switch {
		case err == nil:
			return keys.Key{}, fmt.Errorf("%s: key %s already exists in %s: choose another name", c.label(), name, c.where)
		case !isNotFound(err):
			return keys.Key{}, c.fail(what+": check whether it exists", err)
		}
	}
	resp, err := k.CreateKey(&apiv1.CreateKeyRequest{Name: c.keyName(name), SignatureAlgorithm: alg, Bits: bits, ProtectionLevel: c.level})
	if err != nil {
		return keys.Key{}, c.fail(what, err)
	}
	if got, err := keys.KeyTypeOf(resp.PublicKey); err != nil || got != kt {
		return keys.Key{}, fmt.Errorf("%s: %s: the KMS made a %s key, not %s", c.label(), what, got, kt)
	}
	return keys.Key{Ref: resp.Name, Type: kt, Public: resp.PublicKey}, nil
}

// existingName is the name to look up before creating name, or "".
func (c *cloudBackend) existingName(name string) string {
	switch c.typ {
	case apiv1.CloudKMS:
		return c.keyName(name) + "/cryptoKeyVersions/1"
	case apiv1.AzureKMS:
		return c.keyName(name)
	}
	return ""
}

func isNotFound(err error) bool {
	if errors.Is(err, apiv1.NotFoundError{}) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "NotFound") || strings.Contains(msg, "not found") || strings.Contains(msg, "404")
}

func (c *cloudBackend) signer(ctx context.Context, ref string) (crypto.Signer, error) {
	what := "load key " + ref
	k, err := c.client(ctx, what)
	if err != nil {
		return nil, err
	}
	s, err := k.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: ref})
	if err != nil {
		return nil, c.fail(what, err)
	}
	if _, err := keys.KeyTypeOf(s.Public()); err != nil {
		return nil, fmt.Errorf("%s: key %s: %w", c.label(), ref, err)
	}
	return &checkedSigner{inner: s, pub: s.Public(), fail: func(err error) error { return c.fail("sign with "+ref, err) }, what: c.label() + ": sign with " + ref}, nil
}

func (c *cloudBackend) listKeys(context.Context) ([]keys.Key, error) {
	return nil, fmt.Errorf("%s: listing keys is not supported for %s (step's kms cannot search it): keep the references CreateKey returned: %w", c.label(), c.service, errors.ErrUnsupported)
}

func (c *cloudBackend) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kms == nil {
		return nil
	}
	err := c.kms.Close()
	c.kms = nil
	if err != nil {
		return fmt.Errorf("%s: close: %w", c.label(), err)
	}
	return nil
}
