package ca

import (
	"context"
	"time"

	"github.com/meshroot/meshroot/store"
)

// DeleteExpiredJoinTokens deletes the join tokens that expired before
// before, auditing how many as token.expire (nothing is written when there
// are none). The server's leader runs it as housekeeping.
func (s *Service) DeleteExpiredJoinTokens(ctx context.Context, before time.Time) (int, error) {
	actor := ActorFrom(ctx)
	var n int
	err := s.store.Update(ctx, func(tx store.Tx) error {
		var err error
		if n, err = tx.DeleteExpiredJoinTokens(ctx, before); err != nil || n == 0 {
			return err
		}
		return s.audit(ctx, tx, actor, "token.expire", "", "ok", map[string]any{"deleted": n, "expired_before": before.UTC()})
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
