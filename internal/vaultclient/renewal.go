package vaultclient

import (
	"context"
	"time"

	"github.com/hashicorp/vault/api"
)

// keepAlive renews a renewable token, and logs in again when it can no
// longer be renewed, until ctx ends.
func (c *Client) keepAlive(ctx context.Context, auth *api.SecretAuth) {
	defer close(c.done)
	for {
		if !c.waitForExpiry(ctx, auth) {
			return
		}
		if !c.canRelogin() {
			c.log.Warn("vault token can no longer be renewed and meshroot cannot log in again: configure a new token", "component", c.component)
			<-ctx.Done()
			return
		}
		for backoff := time.Second; ; backoff = min(2*backoff, time.Minute) {
			next, err := c.login(ctx)
			if err == nil {
				auth = next
				break
			}
			c.log.Warn("vault re-login failed", "component", c.component, "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
		}
	}
}

// waitForExpiry renews auth while it can and returns true when a new token
// is needed, or false when ctx ends first. A token without a TTL never
// needs replacing.
func (c *Client) waitForExpiry(ctx context.Context, auth *api.SecretAuth) bool {
	switch {
	case auth == nil:
		<-ctx.Done()
		return false
	case !auth.Renewable:
		return sleep(ctx, time.Duration(auth.LeaseDuration)*time.Second*2/3)
	}
	w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: &api.Secret{Auth: auth}})
	if err != nil {
		c.log.Warn("vault token renewal cannot start", "component", c.component, "err", err)
		return sleep(ctx, time.Duration(auth.LeaseDuration)*time.Second*2/3)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-w.DoneCh():
			if err != nil {
				c.log.Warn("vault token renewal stopped", "component", c.component, "err", err)
			}
			return true
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				c.log.Debug("vault token renewed", "component", c.component, "ttl_seconds", r.Secret.Auth.LeaseDuration)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
