#include "server/security/peer_identity.h"

#include <grpcpp/security/auth_context.h>

namespace fleetpmu::server {
namespace {

std::optional<std::string> First(const grpc::AuthContext& auth, const char* property) {
  std::vector<grpc::string_ref> values = auth.FindPropertyValues(property);
  if (values.empty() || values.front().empty()) return std::nullopt;
  return std::string(values.front().data(), values.front().size());
}

}  // namespace

std::optional<std::string> CertificateHostId(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) return std::nullopt;
  if (auto cn = First(auth, "x509_common_name")) return cn;
  if (auto dns = First(auth, "peer_dns")) return dns;
  return First(auth, "x509_subject_alternative_name");
}

}  // namespace fleetpmu::server
