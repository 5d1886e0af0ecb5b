// QueryService: the server side of fleetpmu.v1.Query (proto/fleetpmu/v1/query.proto), the
// read-only questions fleetpmuctl and scripts ask (docs/server.md "Query API").
//
// Contract:
//   * Every call is authorized first: `authorization: Bearer <token>` metadata, looked up in
//     the TokenStore. Missing or unknown token: UNAUTHENTICATED. An admin token sees every
//     tenant (and must name one where the request requires it: INVALID_ARGUMENT); a tenant
//     token sees only its own tenant (empty tenant_id = its own; another one:
//     PERMISSION_DENIED) and only the hosts where that tenant ran VMs. Without a TokenStore
//     (allow_plaintext without tokens_file) every caller is admin.
//   * A tenant or host the server has never heard of is NOT_FOUND with a message that names
//     it ("unknown tenant \"t9\": ..."); for a tenant token a host where it never ran is
//     NOT_FOUND too, so that host names of other tenants do not leak.
//   * Time ranges: unset = the RPC's default window (ownership: last 5 minutes; lost summary
//     and vCPU stats: last hour); start 0 = the oldest data kept, end 0 = now; end <= start is
//     INVALID_ARGUMENT. Paging as in page_token.h.
//   * Storage errors are INTERNAL or UNAVAILABLE with the storage's message.
//   * Thread-safe; the Storage and TokenStore must outlive the service. No grpcpp here.
#ifndef FLEETPMU_SERVER_QUERY_QUERY_SERVICE_H_
#define FLEETPMU_SERVER_QUERY_QUERY_SERVICE_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/time/time.h"
#include "server/security/tokens.h"
#include "server/storage/storage.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace fleetpmu::server {

struct QueryOptions {
  // Null = no authentication: every caller is admin (allow_plaintext without tokens_file).
  std::shared_ptr<const TokenStore> tokens;
  // Unix ns; default absl::Now().
  std::function<int64_t()> clock;
};

class QueryService {
 public:
  QueryService(Storage* storage, QueryOptions options);
  ~QueryService();
  QueryService(const QueryService&) = delete;
  QueryService& operator=(const QueryService&) = delete;

  grpc::Service* grpc_service();

  // For shutdown: new calls are refused with UNAVAILABLE; returns when the calls in progress
  // have answered, or false at `deadline`.
  bool Drain(absl::Time deadline);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_QUERY_QUERY_SERVICE_H_
