// The host identity of an ingest peer under mTLS (DESIGN.md "Security": "the server derives
// host_id from the client certificate").
//
// Rule (docs/server.md "Security"): the subject Common Name of the verified client certificate;
// when the certificate has no CN, its first DNS subjectAltName. nullopt when the peer presented
// no certificate (or the transport is not TLS). The caller checks the result with
// IsValidIdentity, like any host_id.
#ifndef FLEETPMU_SERVER_SECURITY_PEER_IDENTITY_H_
#define FLEETPMU_SERVER_SECURITY_PEER_IDENTITY_H_

#include <optional>
#include <string>

namespace grpc {
class AuthContext;
}  // namespace grpc

namespace fleetpmu::server {

std::optional<std::string> CertificateHostId(const grpc::AuthContext& auth);

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_SECURITY_PEER_IDENTITY_H_
