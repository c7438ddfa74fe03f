package wire

import (
	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// FederationPeerToProto converts a stored federation peer.
func FederationPeerToProto(p store.FederationPeer) *meshrootv1.FederationPeer {
	return &meshrootv1.FederationPeer{
		TrustDomain: p.TrustDomain, Url: p.URL, Profile: string(p.Profile), EndpointSpiffeId: p.EndpointSPIFFEID,
		CreatedAt: TS(p.CreatedAt), Bundle: p.Bundle, Sequence: p.Sequence, BundleUpdatedAt: TS(p.BundleUpdatedAt),
		LastAttempt: TS(p.Status.LastAttempt), LastSuccess: TS(p.Status.LastSuccess), LastError: p.Status.LastError,
		NextAttempt: TS(p.Status.NextAttempt),
	}
}

// FederationPeerFromProto converts a federation peer message.
func FederationPeerFromProto(m *meshrootv1.FederationPeer) store.FederationPeer {
	return store.FederationPeer{
		TrustDomain: m.GetTrustDomain(), URL: m.GetUrl(), Profile: store.FederationProfile(m.GetProfile()),
		EndpointSPIFFEID: m.GetEndpointSpiffeId(), CreatedAt: FromTS(m.GetCreatedAt()), Bundle: m.GetBundle(),
		Sequence: m.GetSequence(), BundleUpdatedAt: FromTS(m.GetBundleUpdatedAt()),
		Status: store.FederationStatus{
			LastAttempt: FromTS(m.GetLastAttempt()), LastSuccess: FromTS(m.GetLastSuccess()),
			LastError: m.GetLastError(), NextAttempt: FromTS(m.GetNextAttempt()),
		},
	}
}

// AddFederationRequestToProto converts a federation peer registration.
func AddFederationRequestToProto(r ca.AddFederationRequest) *meshrootv1.AddFederationRequest {
	return &meshrootv1.AddFederationRequest{
		TrustDomain: r.TrustDomain, Url: r.URL, Profile: string(r.Profile),
		EndpointSpiffeId: r.EndpointSPIFFEID, BootstrapBundle: r.BootstrapBundle,
	}
}

// AddFederationRequestFromProto converts a federation peer registration
// message.
func AddFederationRequestFromProto(m *meshrootv1.AddFederationRequest) ca.AddFederationRequest {
	return ca.AddFederationRequest{
		TrustDomain: m.GetTrustDomain(), URL: m.GetUrl(), Profile: store.FederationProfile(m.GetProfile()),
		EndpointSPIFFEID: m.GetEndpointSpiffeId(), BootstrapBundle: m.GetBootstrapBundle(),
	}
}
