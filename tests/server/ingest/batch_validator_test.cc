#include "server/ingest/batch_validator.h"

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeBatch;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::MakeVm;
using ::fleetpmu::v1::Batch;
using ::testing::HasSubstr;

constexpr int64_t kNow = kBaseUnixNs + 60 * kSecondNs;

HostContext Context() {
  HostContext context;
  context.host_id = "arm-1";
  context.ApplyHostInfo(MakeHostInfo("arm-1"));
  return context;
}

Batch ValidBatch() { return MakeBatch("arm-1", 7, 1, kBaseUnixNs, 2); }

fleetpmu::v1::TelemetryReport& Report(Batch& batch, int i = 0) { return *batch.mutable_reports(i); }

struct RuleCase {
  std::string name;
  std::function<void(Batch&)> mutate;
  RejectReason reason;
  std::string message;  // a substring of the error
};

class BatchRuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(BatchRuleTest, RejectsWholeBatchNamingRecordAndField) {
  const RuleCase& rule = GetParam();
  ValidationLimits limits;
  limits.max_batch_records = 4;
  limits.max_message_bytes = 1 << 20;
  BatchValidator validator(limits);
  Batch batch = ValidBatch();
  rule.mutate(batch);
  HostContext context = Context();
  RejectReason reason = RejectReason::kOutOfRange;
  absl::Status status = validator.Validate(batch, batch.ByteSizeLong(), kNow, context, &reason);
  ASSERT_FALSE(status.ok()) << rule.name;
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RejectReasonName(reason), RejectReasonName(rule.reason)) << status.message();
  EXPECT_THAT(status.message(), HasSubstr(rule.message));
  // All or nothing: the VMs of a refused batch are not learned.
  EXPECT_TRUE(context.vms.empty());
  EXPECT_EQ(validator.Rejected()[static_cast<size_t>(rule.reason)], 1u);
}

// One case per rule of docs/server.md "Validation rules", in the same order.
const RuleCase kRules[] = {
    {"too_many_reports",
     [](Batch& b) {
       for (int i = 0; i < 3; ++i) *b.add_reports() = b.reports(1);
     },
     RejectReason::kTooManyReports, "5 reports exceed 4"},
    {"empty_batch", [](Batch& b) { b.clear_reports(); }, RejectReason::kEmptyBatch,
     "batch.reports: empty (and no agent_drops)"},
    {"bad_seq", [](Batch& b) { b.set_seq(0); }, RejectReason::kBadSeq, "batch.seq"},
    {"created_in_future", [](Batch& b) { b.set_created_unix_ns(kNow + 3600 * kSecondNs); },
     RejectReason::kBadTimestamp, "batch.created_unix_ns"},
    {"report_for_other_host", [](Batch& b) { Report(b, 1).set_host_id("arm-2"); },
     RejectReason::kHostMismatch, "report[1].host_id: \"arm-2\" differs from the stream's host"},
    {"host_info_for_other_host",
     [](Batch& b) { *Report(b).mutable_host_info() = MakeHostInfo("arm-2"); },
     RejectReason::kHostMismatch, "report[0].host_info.host_id"},
    {"host_info_unsorted_pcpus",
     [](Batch& b) {
       fleetpmu::v1::HostInfo info = MakeHostInfo("arm-1");
       info.mutable_pcpus(2)->set_pcpu(0);
       *Report(b).mutable_host_info() = info;
     },
     RejectReason::kBadHostInfo, "report[0].host_info.pcpus[2].pcpu"},
    {"host_info_n_over_31",
     [](Batch& b) {
       fleetpmu::v1::HostInfo info = MakeHostInfo("arm-1");
       info.mutable_pcpus(0)->set_num_counters(32);
       *Report(b).mutable_host_info() = info;
     },
     RejectReason::kBadHostInfo, "num_counters: 32 exceeds 31"},
    {"host_info_bad_label",
     [](Batch& b) {
       fleetpmu::v1::HostInfo info = MakeHostInfo("arm-1");
       (*info.mutable_labels())["Rack"] = "r1";
       *Report(b).mutable_host_info() = info;
     },
     RejectReason::kBadHostInfo, "labels[\"Rack\"]"},
    {"missing_interval", [](Batch& b) { Report(b).clear_interval(); }, RejectReason::kBadInterval,
     "report[0].interval: missing"},
    {"empty_interval",
     [](Batch& b) {
       Report(b).mutable_interval()->set_end_unix_ns(Report(b).interval().start_unix_ns());
     },
     RejectReason::kBadInterval, "is not after start"},
    {"interval_too_long",
     [](Batch& b) { Report(b).mutable_interval()->set_start_unix_ns(kNow - 7200 * kSecondNs); },
     RejectReason::kBadInterval, "exceeds 3600000000000 ns"},
    {"reports_out_of_order",
     [](Batch& b) { std::swap(*b.mutable_reports(0), *b.mutable_reports(1)); },
     RejectReason::kBadInterval, "report[1].interval: starts before report[0]"},
    {"record_outside_report",
     [](Batch& b) { Report(b).mutable_vcpu_stats(0)->mutable_interval()->set_end_unix_ns(kNow); },
     RejectReason::kBadInterval, "report[0].vcpu_stats[0].interval"},
    {"timestamp_in_future",
     [](Batch& b) {
       auto* interval = Report(b, 1).mutable_interval();
       interval->set_start_unix_ns(kNow + 3600 * kSecondNs);
       interval->set_end_unix_ns(kNow + 3610 * kSecondNs);
     },
     RejectReason::kBadTimestamp, "ahead of the server's clock"},
    {"timestamp_older_than_retention",
     [](Batch& b) {
       for (auto& report : *b.mutable_reports()) {
         report.mutable_interval()->set_start_unix_ns(1000);
       }
     },
     RejectReason::kBadTimestamp, "older than the retention"},
    {"overflow_outside_report",
     [](Batch& b) { Report(b).mutable_overflow_events(0)->set_time_unix_ns(kNow); },
     RejectReason::kBadTimestamp, "report[0].overflow_events[0].time_unix_ns"},
    {"bad_vm_id", [](Batch& b) { Report(b).mutable_vms(0)->set_vm_id("vm 1"); },
     RejectReason::kBadIdentity, "report[0].vms[0].vm_id: \"vm 1\""},
    {"empty_tenant", [](Batch& b) { Report(b).mutable_vms(0)->clear_tenant_id(); },
     RejectReason::kBadIdentity, "report[0].vms[0].tenant_id"},
    {"vm_policy_unspecified", [](Batch& b) { Report(b).mutable_vms(0)->clear_policy(); },
     RejectReason::kMissingEnum, "report[0].vms[0].policy"},
    {"overflow_class_unspecified",
     [](Batch& b) { Report(b).mutable_overflow_events(1)->clear_overflow_class(); },
     RejectReason::kMissingEnum, "report[0].overflow_events[1].overflow_class"},
    {"lost_without_reason",
     [](Batch& b) { Report(b).mutable_overflow_events(0)->clear_lost_reason(); },
     RejectReason::kMissingEnum, "for a LOST wrap"},
    {"drop_stage_unspecified", [](Batch& b) { Report(b).mutable_drops(0)->clear_stage(); },
     RejectReason::kMissingEnum, "report[0].drops[0].stage"},
    {"unknown_vm", [](Batch& b) { Report(b).mutable_vcpu_stats(0)->set_vm_id("vm-404"); },
     RejectReason::kUnknownVm, "vm_id \"vm-404\" is not in this report's vms"},
    {"tenant_mismatch",
     [](Batch& b) { Report(b).mutable_vcpu_stats(1)->set_tenant_id("tenant-z"); },
     RejectReason::kTenantMismatch, "report[0].vcpu_stats[1]: tenant_id \"tenant-z\""},
    {"vcpu_out_of_range", [](Batch& b) { Report(b).mutable_vcpu_stats(1)->set_vcpu(2); },
     RejectReason::kVcpuOutOfRange, "vcpu 2 >= vcpus=2"},
    {"unknown_pcpu", [](Batch& b) { Report(b).mutable_ownership(0)->set_pcpu(4); },
     RejectReason::kUnknownPcpu, "report[0].ownership[0]: pcpu 4 is not a pCPU"},
    {"counter_not_below_n", [](Batch& b) { Report(b).mutable_overflow_events(1)->set_counter(6); },
     RejectReason::kCounterOutOfRange, "counter 6 >= N=6 of pCPU 2"},
    {"guest_counter_not_below_h",
     [](Batch& b) { Report(b).mutable_overflow_events(0)->set_counter(3); },
     RejectReason::kCounterOutOfRange, "guest counter 3 >= h=3"},
    {"mask_beyond_n",
     [](Batch& b) {
       Report(b).mutable_ownership(0)->mutable_residencies(1)->set_counter_mask(0xc0);
     },
     RejectReason::kCounterOutOfRange, "0x000000c0 has counters outside [0,N=6)"},
    {"guest_mask_beyond_h",
     [](Batch& b) {
       Report(b).mutable_ownership(0)->mutable_residencies(0)->set_counter_mask(0x8000000f);
     },
     RejectReason::kCounterOutOfRange, "outside the guest range [0,h=3)"},
    {"h_exceeds_n", [](Batch& b) { Report(b).mutable_vms(0)->set_guest_counters(7); },
     RejectReason::kBadGuestCounters, "h=7 exceeds N=6"},
    {"guest_visible_counters_past_5_bits",
     [](Batch& b) { Report(b).mutable_vms(0)->set_guest_visible_counters(32); },
     RejectReason::kBadGuestCounters, "vms[0].guest_visible_counters: 32 exceeds 31"},
    {"vcpus_zero", [](Batch& b) { Report(b).mutable_vms(0)->set_vcpus(0); }, RejectReason::kBadVm,
     "report[0].vms[0].vcpus: 0 is outside 1..512"},
    {"filter_range_past_ffff",
     [](Batch& b) {
       auto* range = Report(b).mutable_vms(0)->mutable_event_filter()->add_ranges();
       range->set_base_event(0xFFFF);
       range->set_nevents(2);
       range->set_action(fleetpmu::v1::FILTER_ACTION_ALLOW);
     },
     RejectReason::kBadEventFilter, "event_filter.ranges[0]"},
    {"histogram_count_mismatch",
     [](Batch& b) { Report(b).mutable_vcpu_stats(0)->mutable_load_latency()->set_count(1); },
     RejectReason::kBadHistogram, "load_latency: count=1 but bucket_counts sum to 75"},
    {"histogram_bounds_not_increasing",
     [](Batch& b) {
       Report(b).mutable_vcpu_stats(0)->mutable_put_latency()->set_bucket_upper_bounds_ns(1, 5);
     },
     RejectReason::kBadHistogram, "put_latency: bucket_upper_bounds_ns[1]=5"},
    {"histogram_missing_inf_bucket",
     [](Batch& b) {
       Report(b)
           .mutable_vcpu_stats(0)
           ->mutable_put_latency()
           ->mutable_bucket_counts()
           ->RemoveLast();
     },
     RejectReason::kBadHistogram, "2 bucket_counts for 2 bounds"},
    {"lost_by_reason_mismatch",
     [](Batch& b) { Report(b).mutable_vcpu_stats(0)->mutable_overflows()->set_lost(2); },
     RejectReason::kInconsistentOverflows,
     "report[0].vcpu_stats[0].overflows: lost=2 but lost_by_reason sums to 1"},
    {"reason_on_delivered_wrap",
     [](Batch& b) {
       Report(b).mutable_overflow_events(1)->set_lost_reason(
           fleetpmu::v1::LOST_REASON_HOST_CLOBBERED);
     },
     RejectReason::kInconsistentOverflows, "only LOST has a reason"},
    {"run_time_exceeds_interval",
     [](Batch& b) { Report(b).mutable_vcpu_stats(0)->set_run_time_ns(20 * kSecondNs); },
     RejectReason::kInconsistentCounts, "run_time_ns"},
    {"residency_exceeds_interval",
     [](Batch& b) {
       Report(b).mutable_ownership(1)->mutable_residencies(0)->set_resident_ns(11 * kSecondNs);
     },
     RejectReason::kInconsistentCounts, "report[0].ownership[1].residencies[0].resident_ns"},
    {"running_exceeds_enabled",
     [](Batch& b) { Report(b).mutable_host_counters(0)->set_running_ns(30 * kSecondNs); },
     RejectReason::kInconsistentCounts, "running_ns=30000000000 exceeds enabled_ns"},
    {"duplicate_vcpu", [](Batch& b) { *Report(b).add_vcpu_stats() = Report(b).vcpu_stats(0); },
     RejectReason::kDuplicateRecord, "vCPU 0 of VM \"vm-1\" appears twice"},
    {"duplicate_vm", [](Batch& b) { *Report(b).add_vms() = Report(b).vms(0); },
     RejectReason::kDuplicateRecord, "report[0].vms[1].vm_id"},
    {"too_many_trap_keys",
     [](Batch& b) {
       auto& traps = *Report(b).mutable_vcpu_stats(0)->mutable_traps_by_register();
       for (int i = 0; i < 65; ++i) traps["PMEVTYPER" + std::to_string(i) + "_EL0"] = 1;
     },
     RejectReason::kTooManyEntries, "traps_by_register: 66 keys, at most 64"},
    {"event_code_over_ffff",
     [](Batch& b) { Report(b).mutable_overflow_events(1)->set_event_code(0x10000); },
     RejectReason::kOutOfRange, "event_code: 65536 exceeds 0xFFFF"},
};

INSTANTIATE_TEST_SUITE_P(Rules, BatchRuleTest, ::testing::ValuesIn(kRules),
                         [](const ::testing::TestParamInfo<RuleCase>& info) {
                           return info.param.name;
                         });

TEST(BatchValidatorTest, ValidBatchPassesAndTeachesItsVms) {
  BatchValidator validator{ValidationLimits{}};
  Batch batch = ValidBatch();
  HostContext context = Context();
  RejectReason reason;
  absl::Status status = validator.Validate(batch, batch.ByteSizeLong(), kNow, context, &reason);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(context.vms.count("vm-1"), 1u);
  EXPECT_EQ(context.vms["vm-1"].guest_counters(), 3u);

  // A later batch may name the VM without repeating its VmInfo.
  Batch later = MakeBatch("arm-1", 7, 2, kBaseUnixNs + 20 * kSecondNs);
  later.mutable_reports(0)->clear_vms();
  status = validator.Validate(later, later.ByteSizeLong(), kNow, context, &reason);
  EXPECT_TRUE(status.ok()) << status;
  for (uint64_t count : validator.Rejected()) EXPECT_EQ(count, 0u);
}

TEST(BatchValidatorTest, DropsOnlyBatchIsValid) {
  BatchValidator validator{ValidationLimits{}};
  Batch batch = ValidBatch();
  batch.clear_reports();
  fleetpmu::v1::TelemetryDrops* drop = batch.add_agent_drops();
  drop->set_stage(fleetpmu::v1::DROP_STAGE_AGENT_SPOOL);
  drop->set_count(110);
  drop->mutable_interval()->set_start_unix_ns(kBaseUnixNs);
  drop->mutable_interval()->set_end_unix_ns(kBaseUnixNs + kSecondNs);
  HostContext context = Context();
  RejectReason reason;
  absl::Status status = validator.Validate(batch, batch.ByteSizeLong(), kNow, context, &reason);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(BatchValidatorTest, SerializedSizeOverTheLimitIsTooLarge) {
  ValidationLimits limits;
  limits.max_message_bytes = 100;
  BatchValidator validator(limits);
  Batch batch = ValidBatch();
  HostContext context = Context();
  RejectReason reason;
  absl::Status status = validator.Validate(batch, batch.ByteSizeLong(), kNow, context, &reason);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(reason, RejectReason::kTooLarge);
  EXPECT_TRUE(TooLarge(reason));
  EXPECT_FALSE(TooLarge(RejectReason::kBadInterval));
  EXPECT_THAT(status.message(), HasSubstr("exceed 100"));
}

TEST(BatchValidatorTest, HostInfoInAReportUpdatesThePcpusForLaterRecords) {
  BatchValidator validator{ValidationLimits{}};
  Batch batch = ValidBatch();
  // The host grows to 8 pCPUs in report 1; its ownership sample on pCPU 6 is then valid.
  *batch.mutable_reports(1)->mutable_host_info() = MakeHostInfo("arm-1", 8);
  batch.mutable_reports(1)->mutable_ownership(0)->set_pcpu(6);
  HostContext context = Context();
  RejectReason reason;
  absl::Status status = validator.Validate(batch, batch.ByteSizeLong(), kNow, context, &reason);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(context.pcpus.size(), 8u);

  // The same sample in report 0, before the HostInfo, is refused.
  Batch early = ValidBatch();
  early.mutable_reports(0)->mutable_ownership(0)->set_pcpu(6);
  HostContext fresh = Context();
  status = validator.Validate(early, early.ByteSizeLong(), kNow, fresh, &reason);
  EXPECT_EQ(reason, RejectReason::kUnknownPcpu);
}

TEST(BatchValidatorTest, HZeroNeedsHpmn0) {
  BatchValidator validator{ValidationLimits{}};
  Batch batch = ValidBatch();
  fleetpmu::v1::HostInfo info = MakeHostInfo("arm-1");
  for (auto& pcpu : *info.mutable_pcpus()) pcpu.set_has_hpmn0(false);
  HostContext context;
  context.host_id = "arm-1";
  context.ApplyHostInfo(info);
  *batch.mutable_reports(0)->mutable_vms(0) = MakeVm("vm-1", "tenant-a", 2, 0);
  RejectReason reason;
  absl::Status status = validator.Validate(batch, batch.ByteSizeLong(), kNow, context, &reason);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(reason, RejectReason::kBadGuestCounters);
  EXPECT_THAT(status.message(), HasSubstr("FEAT_HPMN0"));
}

TEST(BatchValidatorTest, EveryReasonHasADistinctName) {
  std::set<std::string> names;
  for (size_t i = 0; i < kRejectReasonCount; ++i) {
    names.insert(std::string(RejectReasonName(static_cast<RejectReason>(i))));
  }
  EXPECT_EQ(names.size(), kRejectReasonCount);
  EXPECT_EQ(names.count("unknown"), 0u);
}

TEST(IdentityTest, FollowsTheContract) {
  EXPECT_TRUE(IsValidIdentity("arm-17.rack_3"));
  EXPECT_FALSE(IsValidIdentity(""));
  EXPECT_FALSE(IsValidIdentity("a b"));
  EXPECT_FALSE(IsValidIdentity("host/1"));
  EXPECT_TRUE(IsValidIdentity(std::string(128, 'a')));
  EXPECT_FALSE(IsValidIdentity(std::string(129, 'a')));
}

}  // namespace
}  // namespace fleetpmu::server
