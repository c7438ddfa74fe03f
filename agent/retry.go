package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// permanentError marks failures that retrying cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// backoff is exponential with full jitter, from 1 s up to MaxBackoff.
type backoff struct {
	max, cur time.Duration
}

func (a *Agent) newBackoff() *backoff { return &backoff{max: a.cfg.MaxBackoff} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = time.Second
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + time.Duration(rand.Int64N(int64(b.cur/2)+1))
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.next()):
		return nil
	}
}
