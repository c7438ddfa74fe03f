package federation

import "github.com/meshroot/meshroot/store"

// Store is what a Federator reads and writes: the peers, this trust domain
// (never federated with itself) and, in transactions, what the watchers
// fetched.
type Store interface {
	store.FederationReader
	store.MetaReader
	store.Updater
}
