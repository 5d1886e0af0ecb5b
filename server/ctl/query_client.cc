#include "server/ctl/query_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "fleetpmu/v1/query.grpc.pb.h"

namespace fleetpmu::ctl {

using fleetpmu::v1::Query;

class QueryClient::Impl {
 public:
  Impl(std::shared_ptr<grpc::Channel> channel, QueryClientOptions options)
      : stub_(Query::NewStub(channel)), options_(std::move(options)) {}

  // Calls `rpc` page after page, appending the list field (`items(response)` gives it) of
  // each page to the first.
  template <typename Request, typename Response, typename Rpc, typename Items>
  absl::StatusOr<Response> Paged(Request request, int limit, Rpc rpc, Items items) {
    Response all;
    while (true) {
      if (limit > 0) {
        const int remaining = limit - items(all)->size();
        if (remaining <= 0) break;
        request.set_page_size(std::min(remaining, 1000));
      }
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
      if (!options_.token.empty()) {
        context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
      }
      Response page;
      grpc::Status status = ((*stub_).*rpc)(&context, request, &page);
      if (!status.ok()) {
        return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                            status.error_message());
      }
      // Scalars (total_lost) from the latest page; list items appended.
      auto received = std::move(*items(page));
      items(page)->Clear();
      auto kept = std::move(*items(all));
      all = std::move(page);
      *items(all) = std::move(kept);
      for (auto& item : received) *items(all)->Add() = std::move(item);
      if (all.next_page_token().empty()) break;
      request.set_page_token(all.next_page_token());
    }
    return all;
  }

 private:
  std::unique_ptr<Query::Stub> stub_;
  QueryClientOptions options_;

  friend class QueryClient;
};

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<QueryClient>> QueryClient::Connect(
    const QueryClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  grpc::ChannelArguments arguments;
  if (options.plaintext) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_file.empty()) {
      absl::StatusOr<std::string> roots = ReadFile(options.ca_file);
      if (!roots.ok())
        return absl::NotFoundError(absl::StrCat("--ca_file: ", roots.status().message()));
      ssl.pem_root_certs = *roots;
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.server_name.empty()) arguments.SetSslTargetNameOverride(options.server_name);
  }
  auto channel = grpc::CreateCustomChannel(options.address, credentials, arguments);
  return std::unique_ptr<QueryClient>(new QueryClient(std::make_unique<Impl>(channel, options)));
}

QueryClient::QueryClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
QueryClient::~QueryClient() = default;

absl::StatusOr<fleetpmu::v1::GetCounterOwnershipResponse> QueryClient::Ownership(
    fleetpmu::v1::GetCounterOwnershipRequest request, int limit) {
  return impl_
      ->Paged<fleetpmu::v1::GetCounterOwnershipRequest, fleetpmu::v1::GetCounterOwnershipResponse>(
          std::move(request), limit, &Query::Stub::GetCounterOwnership,
          [](fleetpmu::v1::GetCounterOwnershipResponse& r) { return r.mutable_pcpus(); });
}

absl::StatusOr<fleetpmu::v1::ListHostsResponse> QueryClient::Hosts(
    fleetpmu::v1::ListHostsRequest request, int limit) {
  return impl_->Paged<fleetpmu::v1::ListHostsRequest, fleetpmu::v1::ListHostsResponse>(
      std::move(request), limit, &Query::Stub::ListHosts,
      [](fleetpmu::v1::ListHostsResponse& r) { return r.mutable_hosts(); });
}

absl::StatusOr<fleetpmu::v1::ListOverflowEventsResponse> QueryClient::Overflows(
    fleetpmu::v1::ListOverflowEventsRequest request, int limit) {
  return impl_
      ->Paged<fleetpmu::v1::ListOverflowEventsRequest, fleetpmu::v1::ListOverflowEventsResponse>(
          std::move(request), limit, &Query::Stub::ListOverflowEvents,
          [](fleetpmu::v1::ListOverflowEventsResponse& r) { return r.mutable_events(); });
}

absl::StatusOr<fleetpmu::v1::GetLostOverflowSummaryResponse> QueryClient::Lost(
    fleetpmu::v1::GetLostOverflowSummaryRequest request, int limit) {
  return impl_->Paged<fleetpmu::v1::GetLostOverflowSummaryRequest,
                      fleetpmu::v1::GetLostOverflowSummaryResponse>(
      std::move(request), limit, &Query::Stub::GetLostOverflowSummary,
      [](fleetpmu::v1::GetLostOverflowSummaryResponse& r) { return r.mutable_rows(); });
}

absl::StatusOr<fleetpmu::v1::GetVcpuStatsResponse> QueryClient::Stats(
    fleetpmu::v1::GetVcpuStatsRequest request, int limit) {
  return impl_->Paged<fleetpmu::v1::GetVcpuStatsRequest, fleetpmu::v1::GetVcpuStatsResponse>(
      std::move(request), limit, &Query::Stub::GetVcpuStats,
      [](fleetpmu::v1::GetVcpuStatsResponse& r) { return r.mutable_stats(); });
}

}  // namespace fleetpmu::ctl
