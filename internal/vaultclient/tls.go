package vaultclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/vault/api"
)

// newAPI builds the Vault API client: TLS 1.2 or later with the configured
// CA, client certificate and server name, no redirects, a few retries, and
// nothing taken from VAULT_* environment variables.
func newAPI(component string, cfg Config) (*api.Client, error) {
	ac := &api.Config{
		Address:      strings.TrimRight(cfg.Address, "/"),
		HttpClient:   cleanhttp.DefaultPooledClient(),
		Timeout:      cfg.Timeout,
		MaxRetries:   2,
		MinRetryWait: 100 * time.Millisecond,
		MaxRetryWait: time.Second,
		CheckRetry:   retryPolicy,
	}
	ac.HttpClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ac.HttpClient.Transport.(*http.Transport).TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if err := ac.ConfigureTLS(&api.TLSConfig{
		CACert:        cfg.TLS.CAFile,
		ClientCert:    cfg.TLS.ClientCertFile,
		ClientKey:     cfg.TLS.ClientKeyFile,
		TLSServerName: cfg.TLS.ServerName,
		Insecure:      cfg.TLS.Insecure,
	}); err != nil {
		return nil, fmt.Errorf("%s: Vault TLS settings: %v: check the CA file and the client certificate and key", component, err)
	}
	a, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("%s: Vault client for %s: %v", component, cfg.Address, err)
	}
	// NewClient reads VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS from
	// the environment: undo that, the configuration is explicit.
	a.ClearToken()
	a.SetHeaders(http.Header{})
	if cfg.Namespace != "" {
		a.SetNamespace(cfg.Namespace)
	} else {
		a.ClearNamespace()
	}
	return a, nil
}

// retryPolicy retries connection errors and transient server errors, but
// not a sealed Vault (503) or a refusal: those will not pass by retrying
// within a request.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
		return false, nil
	}
	return api.DefaultRetryPolicy(ctx, resp, err)
}
