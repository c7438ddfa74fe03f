package keys

import "errors"

// Errors that every backend wraps, so that callers (and the conformance
// suite, keystest) can tell them apart with errors.Is whatever the backend.
var (
	// ErrKeyNotFound: the reference names no key (it was deleted, or the
	// reference is wrong).
	ErrKeyNotFound = errors.New("no such key")
	// ErrKeyExists: CreateKey or ImportKey was given a name that is taken.
	ErrKeyExists = errors.New("a key with that name exists")
	// ErrNotConfigured: the configuration lacks what a key manager needs
	// (a passphrase, a Vault connection), or a stored key reference needs
	// a key manager that the configuration does not name (a PKCS#11
	// module, cloud credentials): the configuration, never the reference,
	// decides what is loaded.
	ErrNotConfigured = errors.New("the key manager is not configured")
)

// kindError keeps a backend's message and adds a sentinel for errors.Is.
type kindError struct{ err, kind error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.err, e.kind} }

// NotFound marks err, a backend's own explanation, as ErrKeyNotFound.
func NotFound(err error) error { return kindError{err, ErrKeyNotFound} }

// Exists marks err, a backend's own explanation, as ErrKeyExists.
func Exists(err error) error { return kindError{err, ErrKeyExists} }

// NotConfigured marks err, a backend's own explanation, as ErrNotConfigured.
func NotConfigured(err error) error { return kindError{err, ErrNotConfigured} }
