package store

import "time"

// JoinToken is a single-use credential that lets one cluster request its
// intermediate once. Only a hash of the secret part is stored.
type JoinToken struct {
	// ID is the public part of the token, used to look it up.
	ID      string
	Cluster string
	// SecretHash is the SHA-256 of the secret part.
	SecretHash []byte
	CreatedAt  time.Time
	ExpiresAt  time.Time
	// UsedAt is zero until the token is used.
	UsedAt time.Time
	// KeyHash (SHA-256 of the SubjectPublicKeyInfo of the spending
	// request's CSR, set with UsedAt) and IssuedSerial (of the
	// intermediate issued for it) recognise a retry (server/authn).
	KeyHash      []byte
	IssuedSerial string
}
