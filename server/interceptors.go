package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// countUnary counts unary calls by method and status code.
func countUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

// countStream counts streaming calls by method and status code.
func countStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}
