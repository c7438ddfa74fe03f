package authn_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// A join token is made for one cluster, its record (which holds only a
// hash of the secret) is stored, and the token itself is handed to the
// cluster's agent, which can use it once.
func ExampleNewJoinToken() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "meshroot-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "meshroot.db"))
	if err != nil {
		panic(err)
	}
	defer st.Close()

	now := time.Now()
	token, rec, err := authn.NewJoinToken("east", 15*time.Minute, now)
	if err != nil {
		panic(err)
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: now}); err != nil {
			return err
		}
		return tx.CreateJoinToken(ctx, rec)
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(token, "mrt."+rec.ID+"."), len(token), rec.ExpiresAt.Sub(rec.CreatedAt))

	// The server authenticates the agent's request.
	a := authn.New(st, authn.Options{})
	id, err := a.Authenticate(ctx, "east", authn.Credential{JoinToken: token})
	fmt.Println(id.Cluster, id.Method, id.Subject == rec.ID, err)

	// The token is spent.
	_, err = a.Authenticate(ctx, "east", authn.Credential{JoinToken: token})
	fmt.Println(strings.HasPrefix(err.Error(), "join token was already used at"))
	// Output:
	// true 64 15m0s
	// east join-token true <nil>
	// true
}
