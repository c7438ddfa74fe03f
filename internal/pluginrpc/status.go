package pluginrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/keys"
)

// ErrInvalid marks errors about the request or the configuration it names
// (a bad URI, a missing file): the host reports them as usage errors.
var ErrInvalid = errors.New("invalid request")

// ToStatus turns a backend's error into a gRPC status error with the same
// message, its kind carried by the code.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, keys.ErrKeyNotFound):
		return codes.NotFound
	case errors.Is(err, keys.ErrKeyExists):
		return codes.AlreadyExists
	case errors.Is(err, keys.ErrNotConfigured):
		return codes.FailedPrecondition
	case errors.Is(err, errors.ErrUnsupported):
		return codes.Unimplemented
	case errors.Is(err, ErrInvalid):
		return codes.InvalidArgument
	}
	return codes.Unknown
}

// FromStatus turns a status error from the plugin back into an error with
// the backend's message that errors.Is matches against the same kinds
// (keys.ErrKeyNotFound, context.DeadlineExceeded ...). Errors that are not
// statuses are returned as they are.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	var kind error
	switch st.Code() {
	case codes.DeadlineExceeded:
		kind = context.DeadlineExceeded
	case codes.Canceled:
		kind = context.Canceled
	case codes.NotFound:
		kind = keys.ErrKeyNotFound
	case codes.AlreadyExists:
		kind = keys.ErrKeyExists
	case codes.FailedPrecondition:
		kind = keys.ErrNotConfigured
	case codes.Unimplemented:
		kind = errors.ErrUnsupported
	case codes.InvalidArgument:
		kind = ErrInvalid
	}
	return &remoteError{msg: st.Message(), kind: kind, code: st.Code()}
}

// remoteError is an error that the plugin reported: its message as the
// backend wrote it, and the kind for errors.Is.
type remoteError struct {
	msg  string
	kind error
	code codes.Code
}

// Error is the backend's message.
func (e *remoteError) Error() string { return e.msg }

// Unwrap gives errors.Is the kind of error.
func (e *remoteError) Unwrap() error { return e.kind }

// Code is the gRPC code the plugin sent.
func (e *remoteError) Code() codes.Code { return e.code }
