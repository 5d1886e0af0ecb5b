// The transport security of fleetpmu-server's listeners, from ServerConfig.tls
// (DESIGN.md "Security"; docs/server.md "Security").
//
//   * No `tls`: plaintext on both listeners (the config validator has already required
//     allow_plaintext). Ingest trusts AgentHello.host_id.
//   * `tls` with require_client_cert (the default): the ingest listener demands a client
//     certificate that chains to ca_file (mTLS) and the ingest service takes host_id from it;
//     the query listener asks for no certificate (callers present bearer tokens). When both
//     services share one address, that listener verifies a certificate when one is presented
//     and the ingest service refuses streams without one.
//   * `tls` without require_client_cert: TLS on both, no client certificates; host_id from the
//     hello.
// Files are read here, once, at startup: a missing or unreadable file is an error naming the
// config field and the path. No grpcpp in this header.
#ifndef FLEETPMU_SERVER_SECURITY_TLS_CREDENTIALS_H_
#define FLEETPMU_SERVER_SECURITY_TLS_CREDENTIALS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "fleetpmu/v1/config.pb.h"

namespace grpc {
class ServerCredentials;
}  // namespace grpc

namespace fleetpmu::server {

struct ListenerCredentials {
  std::shared_ptr<grpc::ServerCredentials> ingest;
  std::shared_ptr<grpc::ServerCredentials> query;
  // The single listener when ingest_listen == query_listen.
  std::shared_ptr<grpc::ServerCredentials> shared;
  // mTLS: the ingest service must take host_id from the client certificate.
  bool identity_from_certificate = false;
};

absl::StatusOr<ListenerCredentials> MakeListenerCredentials(
    const fleetpmu::v1::ServerConfig& config);

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_SECURITY_TLS_CREDENTIALS_H_
