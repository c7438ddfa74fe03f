package server

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// Calls failing on the server's side (the store unavailable while the
// database restarts) leave the peer's allowance of refusals alone; calls
// refused for what the caller sent use it up.
func TestRefusalsChargeOnlyTheCallersFault(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: meshrootv1.Issuer_SignIntermediate_FullMethodName}
	call := func(r *refusals, err error) {
		if _, got := r.unary(context.Background(), &meshrootv1.SignIntermediateRequest{}, info, func(context.Context, any) (any, error) { return nil, err }); !errors.Is(got, err) {
			t.Fatalf("interceptor returned %v, want the handler's %v", got, err)
		}
	}
	for _, c := range []struct {
		code    codes.Code
		charged bool
	}{
		{codes.Unavailable, false}, {codes.DeadlineExceeded, false}, {codes.Canceled, false}, {codes.Aborted, false},
		{codes.Unauthenticated, true}, {codes.PermissionDenied, true}, {codes.InvalidArgument, true},
	} {
		r := newRefusals(nil, slog.New(slog.DiscardHandler), Limits{RefusalBurst: 2, RefusalRate: 0.001})
		for range 2 {
			call(r, status.Error(c.code, "failed"))
		}
		if got := !r.allow("unknown"); got != c.charged {
			t.Errorf("after 2 failures with %s the peer is limited: %v, want %v", c.code, got, c.charged)
		}
	}
}
