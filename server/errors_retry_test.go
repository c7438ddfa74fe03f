package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/store"
)

// A store error that nothing landed (a lost database connection) reaches a
// client as Unavailable, which agents retry, not as an internal error.
func TestRetryableStoreErrorIsUnavailable(t *testing.T) {
	err := fmt.Errorf("create intermediate: conn closed (the connection to the database was lost: %w)", store.ErrRetryable)
	got := status.Code(toStatus(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), err))
	if got != codes.Unavailable {
		t.Fatalf("toStatus(retryable store error) = %v, want Unavailable", got)
	}
}
