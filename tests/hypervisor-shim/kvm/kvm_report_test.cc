#include "hypervisor-shim/kvm/kvm_report.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/hypervisor-shim/kvm/canary_fixture.h"

namespace fleetpmu::kvm {
namespace {

using ::testing::Contains;
using testing::HealthyRun;

v1::KvmHost Config() {
  v1::KvmHost config;
  config.set_kernel_policy(v1::POLICY_REVIEWED);
  config.set_reservation_mode(v1::RESERVATION_MODE_STATIC);
  v1::KvmVm* vm = config.add_vms();
  vm->set_vm_id("vm-a");
  vm->set_tenant_id("tenant-a");
  vm->set_vcpus(1);
  v1::KvmVm* refused = config.add_vms();
  refused->set_vm_id("vm-b");
  refused->set_tenant_id("tenant-b");
  refused->set_vcpus(1);
  refused->set_h(7);
  return config;
}

KvmReportInput Input(const v1::KvmHost& config, CanaryVmResult run) {
  KvmReportInput input;
  input.host_id = "arm-1";
  input.start_unix_ns = 500'000'000;
  input.end_unix_ns = 3'000'000'000;
  input.config = &config;
  input.support.host_n = 6;
  input.runs.push_back(std::move(run));
  input.host_deltas.push_back(HostCpuCounters{1, 2, 1000, 500, 42});
  return input;
}

TEST(KvmReportTest, GuestSeeingAnotherNThanHIsReported) {
  const v1::KvmHost config = Config();
  CanaryVmResult run = HealthyRun();
  run.vcpus[0].report.pmcr_n = 6;  // KVM ignored the requested h = 2
  const v1::TelemetryReport report = BuildKvmReport(Input(config, std::move(run)));
  EXPECT_EQ(report.vms(0).guest_counters(), 2u);
  EXPECT_EQ(report.vms(0).guest_visible_counters(), 6u);
}

TEST(KvmReportTest, HealthyRunIsAllDelivered) {
  const v1::KvmHost config = Config();
  const v1::TelemetryReport report = BuildKvmReport(Input(config, HealthyRun()));
  ASSERT_EQ(report.vms_size(), 2);
  EXPECT_EQ(report.vms(0).guest_counters(), 2u);  // from the run
  EXPECT_EQ(report.vms(1).guest_counters(), 7u);  // refused: as configured
  EXPECT_EQ(report.vms(0).guest_visible_counters(), 2u) << "PMCR_EL0.N the canary read";
  EXPECT_FALSE(report.vms(1).has_guest_visible_counters()) << "never ran: nothing seen";
  EXPECT_EQ(report.vms(0).implementation(), v1::PMU_IMPLEMENTATION_EMULATED);
  ASSERT_EQ(report.vcpu_stats_size(), 1);
  const v1::VcpuStats& stats = report.vcpu_stats(0);
  EXPECT_EQ(stats.loads(), 13u);  // 10 KVM_RUN calls + 3 context switches
  EXPECT_EQ(stats.puts(), 13u);
  EXPECT_EQ(stats.run_time_ns(), 500'000'000u);
  EXPECT_EQ(stats.overflows().delivered(), 8u);
  EXPECT_EQ(stats.overflows().lost(), 0u);
  EXPECT_EQ(report.overflow_events_size(), 8);
  for (const v1::OverflowEvent& e : report.overflow_events()) {
    EXPECT_EQ(e.overflow_class(), v1::OVERFLOW_CLASS_DELIVERED);
    EXPECT_EQ(e.pcpu(), 1u);
    EXPECT_EQ(e.time_unix_ns(), 2'000'000'000);
  }
  ASSERT_EQ(report.host_counters_size(), 1);
  EXPECT_EQ(report.host_counters(0).running_ns(), 500u);
  EXPECT_EQ(report.host_counters(0).enabled_ns(), 1000u);
}

TEST(KvmReportTest, MissingInterruptsAreLostIrqMissingAndReportedFirst) {
  const v1::KvmHost config = Config();
  CanaryVmResult run = HealthyRun();
  run.vcpus[0].report.counter[1].interrupts = 1;  // 4 wraps, 1 interrupt
  KvmReportInput input = Input(config, run);
  input.overflow_event_limit = 4;
  const v1::TelemetryReport report = BuildKvmReport(input);
  const v1::VcpuStats& stats = report.vcpu_stats(0);
  EXPECT_EQ(stats.overflows().delivered(), 5u);
  EXPECT_EQ(stats.overflows().lost(), 3u);
  ASSERT_EQ(stats.lost_by_reason_size(), 1);
  EXPECT_EQ(stats.lost_by_reason(0).reason(), v1::LOST_REASON_IRQ_MISSING);
  EXPECT_EQ(stats.lost_by_reason(0).count(), 3u);
  ASSERT_EQ(report.overflow_events_size(), 4);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(report.overflow_events(i).overflow_class(), v1::OVERFLOW_CLASS_LOST);
    EXPECT_EQ(report.overflow_events(i).lost_reason(), v1::LOST_REASON_IRQ_MISSING);
    EXPECT_EQ(report.overflow_events(i).counter(), 1u);
  }
  ASSERT_EQ(report.drops_size(), 1);
  EXPECT_EQ(report.drops(0).stage(), v1::DROP_STAGE_SHIM_RING);
  EXPECT_EQ(report.drops(0).count(), 4u);  // 8 events, 4 fit
}

TEST(KvmReportTest, OwnershipGivesEachPcpuTheGuestMaskForTheTimeItsVcpusRanThere) {
  const v1::KvmHost config = Config();
  CanaryVmResult run = HealthyRun();  // h = 2
  run.vcpus[0].resident_ns_by_cpu = {{0, 300'000'000}, {1, 200'000'000}};
  CanaryVcpuResult second = run.vcpus[0];
  second.vcpu = 1;
  second.resident_ns_by_cpu = {{1, 400'000'000}, {5, 1}};  // CPU 5 is not in HostInfo
  run.vcpus.push_back(second);
  CanaryVmResult later = run;  // a second round in the same interval adds up
  later.vcpus.resize(1);
  later.vcpus[0].resident_ns_by_cpu = {{0, 100'000'000}};
  KvmReportInput input = Input(config, run);
  input.runs.push_back(later);
  input.cpus = {0, 1, 2};
  const v1::TelemetryReport report = BuildKvmReport(input);
  ASSERT_EQ(report.ownership_size(), 3);  // one per pCPU, idle ones too
  const v1::OwnershipSample& cpu0 = report.ownership(0);
  EXPECT_EQ(cpu0.pcpu(), 0u);
  EXPECT_EQ(cpu0.interval().start_unix_ns(), 500'000'000);
  EXPECT_EQ(cpu0.interval().end_unix_ns(), 3'000'000'000);
  ASSERT_EQ(cpu0.residencies_size(), 1);
  EXPECT_EQ(cpu0.residencies(0).owner_kind(), v1::OWNER_KIND_GUEST);
  EXPECT_EQ(cpu0.residencies(0).vm_id(), "vm-a");
  EXPECT_EQ(cpu0.residencies(0).tenant_id(), "tenant-a");
  EXPECT_EQ(cpu0.residencies(0).vcpu(), 0u);
  EXPECT_EQ(cpu0.residencies(0).counter_mask(), 0x80000003u);  // [0,2) and the cycle counter
  EXPECT_EQ(cpu0.residencies(0).resident_ns(), 400'000'000u);
  const v1::OwnershipSample& cpu1 = report.ownership(1);
  ASSERT_EQ(cpu1.residencies_size(), 2);
  EXPECT_EQ(cpu1.residencies(0).vcpu(), 0u);
  EXPECT_EQ(cpu1.residencies(0).resident_ns(), 200'000'000u);
  EXPECT_EQ(cpu1.residencies(1).vcpu(), 1u);
  EXPECT_EQ(cpu1.residencies(1).resident_ns(), 400'000'000u);
  EXPECT_EQ(report.ownership(2).pcpu(), 2u);
  EXPECT_EQ(report.ownership(2).residencies_size(), 0);
}

TEST(KvmReportTest, ResidencyNeverExceedsTheInterval) {
  const v1::KvmHost config = Config();
  CanaryVmResult run = HealthyRun();
  run.vcpus[0].resident_ns_by_cpu = {{1, 9'000'000'000}};
  KvmReportInput input = Input(config, run);
  input.cpus = {1};
  const v1::TelemetryReport report = BuildKvmReport(input);
  ASSERT_EQ(report.ownership_size(), 1);
  ASSERT_EQ(report.ownership(0).residencies_size(), 1);
  EXPECT_EQ(report.ownership(0).residencies(0).resident_ns(), 2'500'000'000u);
}

TEST(KvmReportTest, APcpuKeepsTheLongest256Residencies) {
  const v1::KvmHost config = Config();
  CanaryVmResult run = HealthyRun();
  run.vcpus.resize(300, run.vcpus[0]);
  for (int i = 0; i < 300; ++i) {
    run.vcpus[i].vcpu = i;
    run.vcpus[i].resident_ns_by_cpu = {{0, 1000u + static_cast<uint64_t>(i)}};
  }
  KvmReportInput input = Input(config, run);
  input.cpus = {0};
  const v1::TelemetryReport report = BuildKvmReport(input);
  ASSERT_EQ(report.ownership_size(), 1);
  ASSERT_EQ(report.ownership(0).residencies_size(), 256);
  for (const v1::OwnerResidency& r : report.ownership(0).residencies()) EXPECT_GE(r.vcpu(), 44u);
}

TEST(KvmReportTest, HostInfoNamesTheFallbacksOfAKernelWithoutCounterLimits) {
  const v1::KvmHost config = Config();
  KvmHostInfoInput input;
  input.host_id = "arm-1";
  input.config = &config;
  input.facts.mode = KvmMode::kNvhe;
  input.support.host_n = 6;
  input.support.filter = true;
  input.cpus = {0, 1};
  input.cpu_pmus = {{0, "armv8_pmuv3_0"}, {1, "armv8_pmuv3_0"}};
  const v1::HostInfo info = BuildKvmHostInfo(input);
  EXPECT_EQ(info.backend(), v1::BACKEND_KVM);
  EXPECT_FALSE(info.vhe());
  ASSERT_EQ(info.pcpus_size(), 2);
  EXPECT_EQ(info.pcpus(1).num_counters(), 6u);
  EXPECT_EQ(info.pcpus(1).pmu_id(), "armv8_pmuv3_0");
  EXPECT_EQ(info.kvm_pmu_support().kvm_mode(), "nvhe");
  EXPECT_FALSE(info.kvm_pmu_support().set_nr_counters());
  EXPECT_THAT(info.kvm_pmu_support().fallbacks(),
              Contains("h < N is refused: neither SET_NR_COUNTERS nor a writable PMCR_EL0.N"));
  EXPECT_THAT(info.kvm_pmu_support().fallbacks(),
              Contains("KVM is not in VHE mode: partitioning is impossible (PMU.md section 2)"));
}

}  // namespace
}  // namespace fleetpmu::kvm
