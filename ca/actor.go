package ca

import "context"

// actorKey is the context key of the acting party.
type actorKey struct{}

// WithActor returns ctx carrying who acts, for the audit log. Every method
// of Service that changes state (and audits it) reads the actor from its
// context: the CLI's local mode sets the local user, the admin server the
// caller identified by its transport, the issuer server the authenticated
// cluster. A change whose context carries no actor is refused.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries, or "" when it carries none.
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}
