// The Query service over real gRPC on loopback, with real tokens and a real SQLite storage.
#include "server/query/query_service.h"

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "fleetpmu/v1/query.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/query_server_fixture.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::v1::Query;
using ::testing::HasSubstr;

class QueryServiceTest : public ::fleetpmu::server::testing::QueryServerFixture {
 protected:
  void SetUp() override {
    QueryServerFixture::SetUp();
    stub_ = Query::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  // Calls `rpc` with `token` (empty = no authorization metadata).
  template <typename Request, typename Response, typename Rpc>
  grpc::Status Call(const std::string& token, Rpc rpc, const Request& request, Response* response) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    return ((*stub_).*rpc)(&context, request, response);
  }

  std::unique_ptr<Query::Stub> stub_;
};

TEST_F(QueryServiceTest, CallsWithoutAKnownTokenAreUnauthenticated) {
  fleetpmu::v1::ListHostsResponse hosts;
  grpc::Status status = Call("", &Query::Stub::ListHosts, fleetpmu::v1::ListHostsRequest(), &hosts);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("Bearer"));
  status = Call("guess", &Query::Stub::ListHosts, fleetpmu::v1::ListHostsRequest(), &hosts);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("unknown bearer token"));
}

TEST_F(QueryServiceTest, AdminSeesEveryHostAndTenant) {
  fleetpmu::v1::ListHostsResponse hosts;
  ASSERT_TRUE(
      Call("root-token", &Query::Stub::ListHosts, fleetpmu::v1::ListHostsRequest(), &hosts).ok());
  ASSERT_EQ(hosts.hosts_size(), 3);
  EXPECT_EQ(hosts.hosts(0).host_info().host_id(), "arm-1");
  EXPECT_EQ(hosts.hosts(0).durable_seq(), 1u);
  EXPECT_EQ(hosts.hosts(0).agent_epoch(), 7u);
  EXPECT_TRUE(hosts.next_page_token().empty());

  fleetpmu::v1::ListOverflowEventsResponse events;
  ASSERT_TRUE(Call("root-token", &Query::Stub::ListOverflowEvents,
                   fleetpmu::v1::ListOverflowEventsRequest(), &events)
                  .ok());
  // Three reports, each with one guest and one host event.
  EXPECT_EQ(events.events_size(), 6);
}

TEST_F(QueryServiceTest, TenantTokenSeesOnlyItsTenantAndItsHosts) {
  fleetpmu::v1::ListHostsResponse hosts;
  ASSERT_TRUE(
      Call("a-token", &Query::Stub::ListHosts, fleetpmu::v1::ListHostsRequest(), &hosts).ok());
  ASSERT_EQ(hosts.hosts_size(), 1);
  EXPECT_EQ(hosts.hosts(0).host_info().host_id(), "arm-1");

  fleetpmu::v1::ListOverflowEventsResponse events;
  ASSERT_TRUE(Call("a-token", &Query::Stub::ListOverflowEvents,
                   fleetpmu::v1::ListOverflowEventsRequest(), &events)
                  .ok());
  ASSERT_EQ(events.events_size(), 2);
  for (const auto& event : events.events()) EXPECT_EQ(event.event().tenant_id(), "tenant-a");

  fleetpmu::v1::GetLostOverflowSummaryRequest lost_request;
  lost_request.mutable_range()->set_start_unix_ns(kBaseUnixNs);
  fleetpmu::v1::GetLostOverflowSummaryResponse lost;
  ASSERT_TRUE(Call("a-token", &Query::Stub::GetLostOverflowSummary, lost_request, &lost).ok());
  ASSERT_EQ(lost.rows_size(), 1);
  EXPECT_EQ(lost.rows(0).tenant_id(), "tenant-a");
  EXPECT_EQ(lost.total_lost(), 2u);

  fleetpmu::v1::GetVcpuStatsRequest other;
  other.set_tenant_id("tenant-b");
  fleetpmu::v1::GetVcpuStatsResponse stats;
  grpc::Status denied = Call("a-token", &Query::Stub::GetVcpuStats, other, &stats);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(),
              HasSubstr("the token of tenant \"tenant-a\" may not read tenant \"tenant-b\""));

  // A host where the tenant never ran looks unknown to it.
  fleetpmu::v1::ListOverflowEventsRequest on_arm2;
  on_arm2.set_host_id("arm-2");
  grpc::Status hidden = Call("a-token", &Query::Stub::ListOverflowEvents, on_arm2, &events);
  EXPECT_EQ(hidden.error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Call("root-token", &Query::Stub::ListOverflowEvents, on_arm2, &events).ok());
}

TEST_F(QueryServiceTest, UnknownTenantOrHostIsNotFoundAndNamed) {
  fleetpmu::v1::GetCounterOwnershipRequest request;
  request.set_tenant_id("nobody");
  fleetpmu::v1::GetCounterOwnershipResponse ownership;
  grpc::Status status = Call("root-token", &Query::Stub::GetCounterOwnership, request, &ownership);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("unknown tenant \"nobody\""));

  request.set_tenant_id("tenant-a");
  request.set_host_id("arm-9");
  status = Call("root-token", &Query::Stub::GetCounterOwnership, request, &ownership);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("unknown host \"arm-9\""));

  request.clear_tenant_id();
  request.clear_host_id();
  status = Call("root-token", &Query::Stub::GetCounterOwnership, request, &ownership);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("tenant_id is required"));
}

TEST_F(QueryServiceTest, OwnershipOverTheDefaultWindowAndAtAnInstant) {
  // A tenant token may leave tenant_id empty: its own.
  fleetpmu::v1::GetCounterOwnershipRequest request;
  fleetpmu::v1::GetCounterOwnershipResponse ownership;
  ASSERT_TRUE(Call("a-token", &Query::Stub::GetCounterOwnership, request, &ownership).ok());
  ASSERT_EQ(ownership.pcpus_size(), 2);
  const auto& pcpu0 = ownership.pcpus(0);
  EXPECT_EQ(pcpu0.host_id(), "arm-1");
  EXPECT_EQ(pcpu0.pcpu(), 0u);
  EXPECT_EQ(pcpu0.num_counters(), 6u);
  EXPECT_EQ(pcpu0.counter_mask(), 0x80000007u);
  // 10 s held out of the default 5 minutes.
  EXPECT_NEAR(pcpu0.resident_share(), 10.0 / 300.0, 1e-9);
  ASSERT_EQ(pcpu0.vms_size(), 1);
  EXPECT_EQ(pcpu0.vms(0).guest_counters(), 3u);

  request.set_at_unix_ns(kBaseUnixNs + 15 * kSecondNs);
  ASSERT_TRUE(Call("a-token", &Query::Stub::GetCounterOwnership, request, &ownership).ok());
  ASSERT_EQ(ownership.pcpus_size(), 2);
  EXPECT_DOUBLE_EQ(ownership.pcpus(1).resident_share(), 1.0);

  // A range from the oldest data: [kBase, now) is 60 s, of which pCPU 0 was held 10 s.
  request.mutable_range()->set_start_unix_ns(0);
  ASSERT_TRUE(Call("a-token", &Query::Stub::GetCounterOwnership, request, &ownership).ok());
  EXPECT_NEAR(ownership.pcpus(0).resident_share(), 10.0 / 60.0, 1e-9);

  request.mutable_range()->set_start_unix_ns(kBaseUnixNs + 20 * kSecondNs);
  request.mutable_range()->set_end_unix_ns(kBaseUnixNs);
  grpc::Status backwards = Call("a-token", &Query::Stub::GetCounterOwnership, request, &ownership);
  EXPECT_EQ(backwards.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(QueryServiceTest, PagesFollowTokensBoundToTheirRequest) {
  fleetpmu::v1::ListOverflowEventsRequest request;
  request.set_page_size(4);
  fleetpmu::v1::ListOverflowEventsResponse page;
  ASSERT_TRUE(Call("root-token", &Query::Stub::ListOverflowEvents, request, &page).ok());
  ASSERT_EQ(page.events_size(), 4);
  ASSERT_FALSE(page.next_page_token().empty());
  const int64_t newest = page.events(0).event().time_unix_ns();
  EXPECT_EQ(newest, kBaseUnixNs + 12 * kSecondNs);

  request.set_page_token(page.next_page_token());
  fleetpmu::v1::ListOverflowEventsResponse rest;
  ASSERT_TRUE(Call("root-token", &Query::Stub::ListOverflowEvents, request, &rest).ok());
  EXPECT_EQ(rest.events_size(), 2);
  EXPECT_TRUE(rest.next_page_token().empty());

  request.set_lost_only(true);
  grpc::Status other = Call("root-token", &Query::Stub::ListOverflowEvents, request, &rest);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(other.error_message(), HasSubstr("page_token"));

  request.clear_page_token();
  request.set_page_size(-1);
  EXPECT_EQ(Call("root-token", &Query::Stub::ListOverflowEvents, request, &rest).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(QueryServiceTest, VcpuStatsAreSummedOverTheLastHour) {
  fleetpmu::v1::GetVcpuStatsRequest request;
  request.set_tenant_id("tenant-a");
  fleetpmu::v1::GetVcpuStatsResponse stats;
  ASSERT_TRUE(Call("root-token", &Query::Stub::GetVcpuStats, request, &stats).ok());
  ASSERT_EQ(stats.stats_size(), 2);
  EXPECT_EQ(stats.stats(0).host_id(), "arm-1");
  EXPECT_EQ(stats.stats(0).stats().vm_id(), "vm-1");
  EXPECT_EQ(stats.stats(0).stats().loads(), 200u);
  EXPECT_EQ(stats.stats(0).stats().interval().start_unix_ns(), kBaseUnixNs);
  EXPECT_EQ(stats.stats(0).stats().interval().end_unix_ns(), kBaseUnixNs + 20 * kSecondNs);
}

TEST_F(QueryServiceTest, DrainedServiceRefusesNewCalls) {
  EXPECT_TRUE(service_->Drain(absl::Now() + absl::Seconds(30)));
  fleetpmu::v1::ListHostsResponse hosts;
  grpc::Status status =
      Call("root-token", &Query::Stub::ListHosts, fleetpmu::v1::ListHostsRequest(), &hosts);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
}

}  // namespace
}  // namespace fleetpmu::server
