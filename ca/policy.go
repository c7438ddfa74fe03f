package ca

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"time"

	"github.com/meshroot/meshroot/keys"
)

// Policy defaults.
const (
	// DefaultIntermediateTTL is the lifetime of a cluster intermediate when
	// none is requested, and the default maximum.
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	// DefaultMinIntermediateTTL is the shortest lifetime worth issuing.
	DefaultMinIntermediateTTL = 24 * time.Hour
	// DefaultBackdate is how far NotBefore is set back for clock skew.
	DefaultBackdate = 5 * time.Minute
	// DefaultSupersededRenewalGrace is how long a superseded intermediate
	// may still renew: long enough for an agent that crashed between
	// receiving its new intermediate and writing it to retry, short enough
	// that a replaced (possibly leaked) key soon stops renewing.
	DefaultSupersededRenewalGrace = 10 * time.Minute
)

// Policy is what a cluster intermediate may be. The zero value is usable:
// every zero field takes its default.
type Policy struct {
	// DefaultTTL is used when a request names no TTL (DefaultIntermediateTTL).
	DefaultTTL time.Duration
	// MaxTTL is the longest lifetime a request may ask for (DefaultIntermediateTTL).
	MaxTTL time.Duration
	// MinTTL is the shortest lifetime issued: a request for less, or an
	// issuer that expires sooner than MinTTL from now, is refused
	// (DefaultMinIntermediateTTL).
	MinTTL time.Duration
	// AllowedKeyTypes are the key types a CSR may carry (all KeyTypes).
	AllowedKeyTypes []keys.KeyType
	// TrustDomainConstraint asked for the critical name constraint that
	// permits only URIs in the cluster's trust domain. Every intermediate
	// now carries it (and DNS and IP constraints, see PermittedDNSDomains);
	// the field is kept so that stored and written policies still load.
	TrustDomainConstraint bool
	// PermittedDNSDomains are the DNS domains every cluster intermediate
	// may certify (DefaultPermittedDNSDomains when empty); a cluster's
	// registration adds its own.
	PermittedDNSDomains []string
	// Backdate moves NotBefore back for clock skew (DefaultBackdate).
	Backdate time.Duration
	// SupersededRenewalGrace is how long after a successor was issued a
	// superseded intermediate may still renew by mTLS
	// (DefaultSupersededRenewalGrace).
	SupersededRenewalGrace time.Duration
}

// DefaultPermittedDNSDomains is where istiod's own serving certificate
// names live (istiod.istio-system.svc, istiod-remote.istio-system.svc,
// istio-pilot.istio-system.svc, istiod-<revision>.istio-system.svc): istiod
// signs that certificate with the plugged-in cluster intermediate, so the
// intermediate must be allowed to certify them.
var DefaultPermittedDNSDomains = []string{"istio-system.svc"}

func (p Policy) dnsDomains() []string {
	if len(p.PermittedDNSDomains) == 0 {
		return DefaultPermittedDNSDomains
	}
	return p.PermittedDNSDomains
}

func (p Policy) withDefaults() Policy {
	if p.MaxTTL == 0 {
		p.MaxTTL = DefaultIntermediateTTL
	}
	if p.DefaultTTL == 0 {
		p.DefaultTTL = min(DefaultIntermediateTTL, p.MaxTTL)
	}
	if p.MinTTL == 0 {
		p.MinTTL = DefaultMinIntermediateTTL
	}
	if len(p.AllowedKeyTypes) == 0 {
		p.AllowedKeyTypes = keys.KeyTypes
	}
	if p.Backdate == 0 {
		p.Backdate = DefaultBackdate
	}
	if p.SupersededRenewalGrace == 0 {
		p.SupersededRenewalGrace = DefaultSupersededRenewalGrace
	}
	return p
}

// Effective returns p with every zero field set to its default.
func (p Policy) Effective() Policy { return p.withDefaults() }

// Validate reports a policy that contradicts itself.
func (p Policy) Validate() error {
	p = p.withDefaults()
	switch {
	case p.MinTTL < 0 || p.MaxTTL < 0 || p.DefaultTTL < 0 || p.Backdate < 0 || p.SupersededRenewalGrace < 0:
		return fmt.Errorf("intermediate policy: durations must not be negative")
	case p.MinTTL > p.MaxTTL:
		return fmt.Errorf("intermediate policy: minimum TTL %s exceeds maximum TTL %s", p.MinTTL, p.MaxTTL)
	case p.DefaultTTL > p.MaxTTL || p.DefaultTTL < p.MinTTL:
		return fmt.Errorf("intermediate policy: default TTL %s is outside [%s, %s]", p.DefaultTTL, p.MinTTL, p.MaxTTL)
	}
	for _, d := range p.PermittedDNSDomains {
		if err := ValidateDNSDomain(d); err != nil {
			return fmt.Errorf("intermediate policy: %w", err)
		}
	}
	for _, kt := range p.AllowedKeyTypes {
		if _, err := keys.ParseKeyType(string(kt)); err != nil {
			return fmt.Errorf("intermediate policy: %w", err)
		}
	}
	return nil
}

func (p Policy) allowsKeyType(kt keys.KeyType) bool {
	return slices.Contains(p.AllowedKeyTypes, kt)
}

// dnsDomainPattern is a DNS domain as a name constraint takes it: labels of
// letters, digits and '-', lower case, no wildcard, no trailing dot.
var dnsDomainPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// ValidateDNSDomain reports whether d can be a permitted DNS domain (it
// then permits d and every name under it).
func ValidateDNSDomain(d string) error {
	if len(d) > 253 || !dnsDomainPattern.MatchString(d) {
		return fmt.Errorf("DNS domain %q is invalid: give lower-case labels of letters, digits and '-' separated by dots, without a wildcard (a domain permits every name under it)", d)
	}
	return nil
}

// ParsePermittedIPs parses IP ranges in CIDR notation (a bare address is
// a single-address range) for a cluster's registration.
func ParsePermittedIPs(ranges []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, r := range ranges {
		if ip := net.ParseIP(r); ip != nil {
			bits := 128
			if v4 := ip.To4(); v4 != nil {
				ip, bits = v4, 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(r)
		if err != nil {
			return nil, fmt.Errorf("IP range %q is invalid: give an address or CIDR such as 10.0.0.0/8", r)
		}
		out = append(out, n)
	}
	return out, nil
}
