package adminclient

import (
	"context"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// QuarantineCluster implements ca.QuarantineAdmin.
func (c *Client) QuarantineCluster(ctx context.Context, req ca.QuarantineRequest) (ca.QuarantineResult, error) {
	return call(ctx, c.c.QuarantineCluster, &meshrootv1.QuarantineClusterRequest{Cluster: req.Cluster, Reason: req.Reason, DryRun: req.DryRun}, ok(wire.QuarantineResultFromProto))
}

// ReleaseCluster implements ca.QuarantineAdmin.
func (c *Client) ReleaseCluster(ctx context.Context, name string) (store.Quarantine, error) {
	return call(ctx, c.c.ReleaseCluster, &meshrootv1.ReleaseClusterRequest{Cluster: name}, ok(wire.QuarantineFromProto))
}

// ListQuarantines implements ca.QuarantineAdmin.
func (c *Client) ListQuarantines(ctx context.Context) ([]ca.QuarantineStatus, error) {
	return call(ctx, c.c.ListQuarantines, &meshrootv1.ListQuarantinesRequest{}, ok(wire.QuarantinesFromProto))
}
