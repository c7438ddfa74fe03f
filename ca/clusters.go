package ca

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshroot/meshroot/plugins/store"
)

// AddCluster registers a cluster that may request intermediates. An empty
// trust domain takes the authority's.
func (s *Service) AddCluster(ctx context.Context, actor Actor, name, trustDomain string) (store.Cluster, error) {
	c, err := s.addCluster(ctx, actor, name, trustDomain)
	if err != nil {
		return store.Cluster{}, s.auditRefusal(ctx, actor, "cluster.add", name, err)
	}
	return c, nil
}

func (s *Service) addCluster(ctx context.Context, actor Actor, name, td string) (store.Cluster, error) {
	if err := ValidateClusterName(name); err != nil {
		return store.Cluster{}, refuse(err)
	}
	if td == "" {
		var err error
		if td, err = s.store.Meta(ctx, MetaTrustDomain); err != nil {
			return store.Cluster{}, err
		}
		if td == "" {
			return store.Cluster{}, refusef("no trust domain: run `meshroot root init` first or pass --trust-domain")
		}
	}
	if _, err := ParseTrustDomain(td); err != nil {
		return store.Cluster{}, refuse(err)
	}
	c := store.Cluster{Name: name, TrustDomain: td, CreatedAt: s.now().UTC()}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx, c); err != nil {
			if errors.Is(err, store.ErrAlreadyExists) {
				return refusef("cluster %s is already registered", name)
			}
			return err
		}
		return s.audit(ctx, tx, actor, "cluster.add", name, "ok", map[string]any{"trust_domain": td})
	})
	return c, err
}

// ListClusters returns the registered clusters by name.
func (s *Service) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	return s.store.ListClusters(ctx)
}

// cluster loads a registered cluster, refusing an unknown name.
func (s *Service) cluster(ctx context.Context, name string) (store.Cluster, error) {
	if err := ValidateClusterName(name); err != nil {
		return store.Cluster{}, refuse(err)
	}
	c, err := s.store.GetCluster(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Cluster{}, refusef("cluster %s is not registered: run `meshroot cluster add %s` first", name, name)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("load cluster %s: %w", name, err)
	}
	return c, nil
}
