// QueryClient: fleetpmuctl's connection to the Query API, following pages for the caller.
//
// Contract:
//   * Connect never blocks on the network; the first call does. TLS (server verified with
//     ca_file, or the system roots) unless `plaintext` is set explicitly.
//   * Every call sends `authorization: Bearer <token>` when a token is set, has `timeout` as
//     its deadline per RPC, and follows next_page_token until `limit` items were received
//     (0 = all pages); the pages are concatenated into one response whose next_page_token is
//     the server's token after the last page read (empty when everything was read).
//   * Errors keep the server's status code and message (NOT_FOUND "unknown tenant ...").
//   * No grpcpp in this header.
#ifndef FLEETPMU_SERVER_CTL_QUERY_CLIENT_H_
#define FLEETPMU_SERVER_CTL_QUERY_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleetpmu/v1/query.pb.h"

namespace fleetpmu::ctl {

struct QueryClientOptions {
  std::string address;
  bool plaintext = false;
  std::string ca_file;      // PEM roots; empty = system roots
  std::string server_name;  // TLS name override; empty = the host part of address
  std::string token;        // bearer token; empty = none
  absl::Duration timeout = absl::Seconds(30);
};

class QueryClient {
 public:
  static absl::StatusOr<std::unique_ptr<QueryClient>> Connect(const QueryClientOptions& options);
  ~QueryClient();

  absl::StatusOr<fleetpmu::v1::GetCounterOwnershipResponse> Ownership(
      fleetpmu::v1::GetCounterOwnershipRequest request, int limit);
  absl::StatusOr<fleetpmu::v1::ListHostsResponse> Hosts(fleetpmu::v1::ListHostsRequest request,
                                                        int limit);
  absl::StatusOr<fleetpmu::v1::ListOverflowEventsResponse> Overflows(
      fleetpmu::v1::ListOverflowEventsRequest request, int limit);
  absl::StatusOr<fleetpmu::v1::GetLostOverflowSummaryResponse> Lost(
      fleetpmu::v1::GetLostOverflowSummaryRequest request, int limit);
  absl::StatusOr<fleetpmu::v1::GetVcpuStatsResponse> Stats(
      fleetpmu::v1::GetVcpuStatsRequest request, int limit);

  class Impl;

 private:
  explicit QueryClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpmu::ctl

#endif  // FLEETPMU_SERVER_CTL_QUERY_CLIENT_H_
