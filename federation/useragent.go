package federation

import "context"

// defaultUserAgent is the User-Agent of bundle fetches.
const defaultUserAgent = "meshroot-federation"

type userAgentKey struct{}

// WithUserAgent makes FetchBundle calls with ctx send ua as their
// User-Agent ("" keeps the default, meshroot-federation).
func WithUserAgent(ctx context.Context, ua string) context.Context {
	if ua == "" {
		return ctx
	}
	return context.WithValue(ctx, userAgentKey{}, ua)
}

// userAgent is the User-Agent for a fetch with ctx.
func userAgent(ctx context.Context) string {
	if ua, ok := ctx.Value(userAgentKey{}).(string); ok {
		return ua
	}
	return defaultUserAgent
}
