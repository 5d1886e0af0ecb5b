#include "server/query/query_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fleetpmu/v1/query.grpc.pb.h"
#include "server/query/page_token.h"
#include "server/status_macros.h"

namespace fleetpmu::server {

using fleetpmu::v1::GetCounterOwnershipRequest;
using fleetpmu::v1::GetCounterOwnershipResponse;
using fleetpmu::v1::GetLostOverflowSummaryRequest;
using fleetpmu::v1::GetLostOverflowSummaryResponse;
using fleetpmu::v1::GetVcpuStatsRequest;
using fleetpmu::v1::GetVcpuStatsResponse;
using fleetpmu::v1::ListHostsRequest;
using fleetpmu::v1::ListHostsResponse;
using fleetpmu::v1::ListOverflowEventsRequest;
using fleetpmu::v1::ListOverflowEventsResponse;

namespace {

constexpr int64_t kSecondNs = 1000000000;
constexpr int64_t kOwnershipDefaultNs = 5 * 60 * kSecondNs;
constexpr int64_t kSummaryDefaultNs = 3600 * kSecondNs;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status UnknownTenant(const std::string& tenant) {
  return absl::NotFoundError(
      absl::StrCat("unknown tenant \"", tenant, "\": no VM of it has reported to this server"));
}

absl::Status UnknownHost(const std::string& host) {
  return absl::NotFoundError(absl::StrCat("unknown host \"", host,
                                          "\": no agent of that name has reported to this server"));
}

// Offset and window of this page: from the token, or fresh for a first page.
struct PagePlan {
  int32_t size = kDefaultPageSize;
  PageCursor cursor;
  uint64_t fingerprint = 0;
};

absl::StatusOr<PagePlan> PlanPage(const google::protobuf::Message& request, int32_t page_size,
                                  const std::string& page_token, TimeWindow fresh) {
  PagePlan plan;
  FLEETPMU_ASSIGN_OR_RETURN(plan.size, EffectivePageSize(page_size));
  plan.fingerprint = RequestFingerprint(request);
  if (page_token.empty()) {
    plan.cursor.start_unix_ns = fresh.start_unix_ns;
    plan.cursor.end_unix_ns = fresh.end_unix_ns;
  } else {
    FLEETPMU_ASSIGN_OR_RETURN(plan.cursor, DecodePageToken(page_token, plan.fingerprint));
  }
  return plan;
}

std::string NextToken(const PagePlan& plan, size_t returned, bool more) {
  if (!more) return "";
  PageCursor next = plan.cursor;
  next.offset += static_cast<int64_t>(returned);
  return EncodePageToken(next, plan.fingerprint);
}

}  // namespace

class QueryService::Impl final : public fleetpmu::v1::Query::Service {
 public:
  Impl(Storage* storage, QueryOptions options) : storage_(storage), options_(std::move(options)) {
    if (!options_.clock) options_.clock = [] { return absl::ToUnixNanos(absl::Now()); };
  }

  grpc::Status GetCounterOwnership(grpc::ServerContext* context,
                                   const GetCounterOwnershipRequest* request,
                                   GetCounterOwnershipResponse* response) override {
    CallScope scope(*this);
    if (!scope.admitted()) return ShuttingDown();
    return ToGrpc(Ownership(*context, *request, *response));
  }
  grpc::Status ListHosts(grpc::ServerContext* context, const ListHostsRequest* request,
                         ListHostsResponse* response) override {
    CallScope scope(*this);
    if (!scope.admitted()) return ShuttingDown();
    return ToGrpc(Hosts(*context, *request, *response));
  }
  grpc::Status ListOverflowEvents(grpc::ServerContext* context,
                                  const ListOverflowEventsRequest* request,
                                  ListOverflowEventsResponse* response) override {
    CallScope scope(*this);
    if (!scope.admitted()) return ShuttingDown();
    return ToGrpc(Overflows(*context, *request, *response));
  }
  grpc::Status GetLostOverflowSummary(grpc::ServerContext* context,
                                      const GetLostOverflowSummaryRequest* request,
                                      GetLostOverflowSummaryResponse* response) override {
    CallScope scope(*this);
    if (!scope.admitted()) return ShuttingDown();
    return ToGrpc(Lost(*context, *request, *response));
  }
  grpc::Status GetVcpuStats(grpc::ServerContext* context, const GetVcpuStatsRequest* request,
                            GetVcpuStatsResponse* response) override {
    CallScope scope(*this);
    if (!scope.admitted()) return ShuttingDown();
    return ToGrpc(Stats(*context, *request, *response));
  }

  bool Drain(absl::Time deadline) {
    absl::MutexLock lock(&calls_mu_);
    draining_ = true;
    return calls_mu_.AwaitWithDeadline(absl::Condition(this, &Impl::IdleLocked), deadline);
  }

 private:
  // Counts a call in progress; refuses it once draining.
  class CallScope {
   public:
    explicit CallScope(Impl& impl) : impl_(impl) {
      absl::MutexLock lock(&impl_.calls_mu_);
      admitted_ = !impl_.draining_;
      if (admitted_) ++impl_.calls_;
    }
    ~CallScope() {
      if (!admitted_) return;
      absl::MutexLock lock(&impl_.calls_mu_);
      --impl_.calls_;
    }
    bool admitted() const { return admitted_; }

   private:
    Impl& impl_;
    bool admitted_ = false;
  };

  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
  }

  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(calls_mu_) { return calls_ == 0; }

  absl::StatusOr<Principal> Authorize(const grpc::ServerContext& context) const {
    if (options_.tokens == nullptr) return Principal::Admin();
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it == metadata.end()) {
      return absl::UnauthenticatedError(
          "missing \"authorization: Bearer <token>\" metadata (fleetpmuctl --token_file)");
    }
    const absl::string_view value(it->second.data(), it->second.size());
    constexpr absl::string_view kBearer = "bearer ";
    if (value.size() <= kBearer.size() ||
        !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
      return absl::UnauthenticatedError("the authorization metadata is not \"Bearer <token>\"");
    }
    std::optional<Principal> principal =
        options_.tokens->Authenticate(absl::StripAsciiWhitespace(value.substr(kBearer.size())));
    if (!principal.has_value()) return absl::UnauthenticatedError("unknown bearer token");
    return *principal;
  }

  // The tenant a request is about, after the principal's scope. `required`: an admin must
  // name one. An empty result (admin, not required) means every tenant.
  absl::StatusOr<std::string> ScopeTenant(const Principal& principal, const std::string& requested,
                                          bool required) const {
    std::string tenant = requested;
    if (!principal.admin) {
      if (!requested.empty() && requested != principal.tenant_id) {
        return absl::PermissionDeniedError(
            absl::StrCat("the token of tenant \"", principal.tenant_id, "\" may not read tenant \"",
                         requested, "\""));
      }
      tenant = principal.tenant_id;
    } else if (required && requested.empty()) {
      return absl::InvalidArgumentError("tenant_id is required (fleetpmuctl --tenant)");
    }
    if (!tenant.empty()) {
      FLEETPMU_ASSIGN_OR_RETURN(bool known, storage_->TenantExists(tenant));
      if (!known) return UnknownTenant(tenant);
    }
    return tenant;
  }

  absl::Status CheckHost(const Principal& principal, const std::string& host) const {
    if (host.empty()) return absl::OkStatus();
    FLEETPMU_ASSIGN_OR_RETURN(bool known, storage_->HostExists(host));
    if (!known) return UnknownHost(host);
    if (!principal.admin) {
      FLEETPMU_ASSIGN_OR_RETURN(bool ran, storage_->TenantRanOnHost(principal.tenant_id, host));
      if (!ran) return UnknownHost(host);
    }
    return absl::OkStatus();
  }

  // A TimeRange (or its absence) as a window: end 0 = now, start 0 = `zero_start`.
  absl::StatusOr<TimeWindow> Resolve(const fleetpmu::v1::TimeRange* range, int64_t default_ns,
                                     int64_t zero_start) const {
    const int64_t now = options_.clock();
    if (range == nullptr) return TimeWindow{now - default_ns, now};
    TimeWindow window{range->start_unix_ns(), range->end_unix_ns()};
    if (window.end_unix_ns == 0) window.end_unix_ns = now;
    if (window.start_unix_ns == 0) window.start_unix_ns = zero_start;
    if (range->start_unix_ns() != 0 && range->end_unix_ns() != 0 &&
        range->end_unix_ns() <= range->start_unix_ns()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "range: end ", range->end_unix_ns(), " is not after start ", range->start_unix_ns()));
    }
    if (window.end_unix_ns <= window.start_unix_ns) {
      window.start_unix_ns = window.end_unix_ns - 1;
    }
    return window;
  }

  absl::Status Ownership(const grpc::ServerContext& context,
                         const GetCounterOwnershipRequest& request,
                         GetCounterOwnershipResponse& response) {
    FLEETPMU_ASSIGN_OR_RETURN(Principal principal, Authorize(context));
    FLEETPMU_ASSIGN_OR_RETURN(std::string tenant,
                              ScopeTenant(principal, request.tenant_id(), true));
    FLEETPMU_RETURN_IF_ERROR(CheckHost(principal, request.host_id()));

    OwnershipQuery query;
    query.tenant_id = tenant;
    query.host_id = request.host_id();
    TimeWindow fresh;
    if (request.when_case() == GetCounterOwnershipRequest::kAtUnixNs) {
      fresh = TimeWindow{request.at_unix_ns(), request.at_unix_ns() + 1};
    } else {
      int64_t oldest = 0;
      if (request.has_range() && request.range().start_unix_ns() == 0) {
        FLEETPMU_ASSIGN_OR_RETURN(oldest, storage_->OldestDataUnixNs());
      }
      FLEETPMU_ASSIGN_OR_RETURN(fresh, Resolve(request.has_range() ? &request.range() : nullptr,
                                               kOwnershipDefaultNs, oldest));
    }
    FLEETPMU_ASSIGN_OR_RETURN(PagePlan plan,
                              PlanPage(request, request.page_size(), request.page_token(), fresh));
    if (request.when_case() == GetCounterOwnershipRequest::kAtUnixNs) {
      query.at_unix_ns = plan.cursor.start_unix_ns;
    } else {
      query.range = TimeWindow{plan.cursor.start_unix_ns, plan.cursor.end_unix_ns};
    }
    FLEETPMU_ASSIGN_OR_RETURN(std::vector<fleetpmu::v1::PcpuOwnership> all,
                              storage_->GetCounterOwnership(query));
    const size_t begin = std::min(all.size(), static_cast<size_t>(plan.cursor.offset));
    const size_t end = std::min(all.size(), begin + static_cast<size_t>(plan.size));
    for (size_t i = begin; i < end; ++i) *response.add_pcpus() = std::move(all[i]);
    response.set_next_page_token(NextToken(plan, end - begin, end < all.size()));
    return absl::OkStatus();
  }

  absl::Status Hosts(const grpc::ServerContext& context, const ListHostsRequest& request,
                     ListHostsResponse& response) {
    FLEETPMU_ASSIGN_OR_RETURN(Principal principal, Authorize(context));
    FLEETPMU_ASSIGN_OR_RETURN(std::string tenant,
                              ScopeTenant(principal, request.tenant_id(), false));
    FLEETPMU_ASSIGN_OR_RETURN(
        PagePlan plan, PlanPage(request, request.page_size(), request.page_token(), TimeWindow{}));
    FLEETPMU_ASSIGN_OR_RETURN(Page<fleetpmu::v1::HostSummary> page,
                              storage_->ListHosts(tenant, {plan.cursor.offset, plan.size}));
    for (auto& host : page.items) *response.add_hosts() = std::move(host);
    response.set_next_page_token(NextToken(plan, page.items.size(), page.more));
    return absl::OkStatus();
  }

  absl::Status Overflows(const grpc::ServerContext& context,
                         const ListOverflowEventsRequest& request,
                         ListOverflowEventsResponse& response) {
    FLEETPMU_ASSIGN_OR_RETURN(Principal principal, Authorize(context));
    FLEETPMU_ASSIGN_OR_RETURN(std::string tenant,
                              ScopeTenant(principal, request.tenant_id(), false));
    FLEETPMU_RETURN_IF_ERROR(CheckHost(principal, request.host_id()));
    FLEETPMU_ASSIGN_OR_RETURN(
        PagePlan plan, PlanPage(request, request.page_size(), request.page_token(), TimeWindow{}));
    OverflowQuery query;
    query.lost_only = request.lost_only();
    query.tenant_id = tenant;
    query.host_id = request.host_id();
    query.since_unix_ns = request.since_unix_ns();
    FLEETPMU_ASSIGN_OR_RETURN(Page<fleetpmu::v1::HostOverflowEvent> page,
                              storage_->ListOverflowEvents(query, {plan.cursor.offset, plan.size}));
    for (auto& event : page.items) *response.add_events() = std::move(event);
    response.set_next_page_token(NextToken(plan, page.items.size(), page.more));
    return absl::OkStatus();
  }

  absl::Status Lost(const grpc::ServerContext& context,
                    const GetLostOverflowSummaryRequest& request,
                    GetLostOverflowSummaryResponse& response) {
    FLEETPMU_ASSIGN_OR_RETURN(Principal principal, Authorize(context));
    FLEETPMU_ASSIGN_OR_RETURN(std::string tenant,
                              ScopeTenant(principal, request.tenant_id(), false));
    FLEETPMU_RETURN_IF_ERROR(CheckHost(principal, request.host_id()));
    FLEETPMU_ASSIGN_OR_RETURN(
        TimeWindow fresh,
        Resolve(request.has_range() ? &request.range() : nullptr, kSummaryDefaultNs, 0));
    FLEETPMU_ASSIGN_OR_RETURN(PagePlan plan,
                              PlanPage(request, request.page_size(), request.page_token(), fresh));
    LostSummaryQuery query;
    query.tenant_id = tenant;
    query.host_id = request.host_id();
    query.range = TimeWindow{plan.cursor.start_unix_ns, plan.cursor.end_unix_ns};
    FLEETPMU_ASSIGN_OR_RETURN(
        fleetpmu::server::LostSummary summary,
        storage_->GetLostOverflowSummary(query, {plan.cursor.offset, plan.size}));
    for (auto& row : summary.rows) *response.add_rows() = std::move(row);
    response.set_total_lost(summary.total_lost);
    response.set_next_page_token(NextToken(plan, response.rows_size(), summary.more));
    return absl::OkStatus();
  }

  absl::Status Stats(const grpc::ServerContext& context, const GetVcpuStatsRequest& request,
                     GetVcpuStatsResponse& response) {
    FLEETPMU_ASSIGN_OR_RETURN(Principal principal, Authorize(context));
    FLEETPMU_ASSIGN_OR_RETURN(std::string tenant,
                              ScopeTenant(principal, request.tenant_id(), true));
    FLEETPMU_ASSIGN_OR_RETURN(
        TimeWindow fresh,
        Resolve(request.has_range() ? &request.range() : nullptr, kSummaryDefaultNs, 0));
    FLEETPMU_ASSIGN_OR_RETURN(PagePlan plan,
                              PlanPage(request, request.page_size(), request.page_token(), fresh));
    VcpuStatsQuery query;
    query.tenant_id = tenant;
    query.vm_id = request.vm_id();
    query.range = TimeWindow{plan.cursor.start_unix_ns, plan.cursor.end_unix_ns};
    FLEETPMU_ASSIGN_OR_RETURN(Page<fleetpmu::v1::HostVcpuStats> page,
                              storage_->GetVcpuStats(query, {plan.cursor.offset, plan.size}));
    for (auto& stats : page.items) *response.add_stats() = std::move(stats);
    response.set_next_page_token(NextToken(plan, page.items.size(), page.more));
    return absl::OkStatus();
  }

  Storage* storage_;
  QueryOptions options_;
  mutable absl::Mutex calls_mu_;
  int calls_ ABSL_GUARDED_BY(calls_mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(calls_mu_) = false;
};

QueryService::QueryService(Storage* storage, QueryOptions options)
    : impl_(std::make_unique<Impl>(storage, std::move(options))) {}

QueryService::~QueryService() = default;

grpc::Service* QueryService::grpc_service() { return impl_.get(); }

bool QueryService::Drain(absl::Time deadline) { return impl_->Drain(deadline); }

}  // namespace fleetpmu::server
