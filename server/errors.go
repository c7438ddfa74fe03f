package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
)

// toStatus maps an error from the authority, the store or authentication to
// a gRPC status. Refusals keep their message (it says what to fix);
// internal errors are logged and answered with a generic message, so
// nothing about the server's internals leaks to a requester.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var ae *authn.Error
	var pe *ca.PolicyError
	switch {
	case errors.As(err, &ae):
		if ae.Code == authn.PermissionDenied {
			return status.Error(codes.PermissionDenied, ae.Reason)
		}
		return status.Error(codes.Unauthenticated, ae.Reason)
	case errors.As(err, &pe):
		return status.Error(codes.InvalidArgument, pe.Error())
	case errors.Is(err, store.ErrRetryable):
		// Nothing landed (a lost database connection, say): the caller
		// retries, on this replica or another.
		log.WarnContext(ctx, "store unavailable, request may be retried", "error", err)
		return status.Error(codes.Unavailable, "the state store is unavailable for a moment: retry")
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	log.ErrorContext(ctx, "internal error", "error", err)
	return status.Error(codes.Internal, "internal error; see the meshroot server log")
}
