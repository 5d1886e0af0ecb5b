// Scenario: a small PartitionedHost with readable guest-side helpers, for the context-switch tests.
#ifndef FLEETPMU_TESTS_HYPERVISOR_SHIM_PARTITION_SCENARIO_H_
#define FLEETPMU_TESTS_HYPERVISOR_SHIM_PARTITION_SCENARIO_H_

#include "gtest/gtest.h"
#include "hypervisor-shim/partition/partitioned_host.h"

namespace fleetpmu::partition::testing {

class Scenario {
 public:
  struct Shape {
    int pcpus = 2;
    pmu::PmuFeatures features{.num_counters = 6, .p5 = false, .hpmn0 = false, .fgt = true};
    HostReservation reservation = HostReservation::kStatic;
    int static_guest_counters = 6;
  };

  explicit Scenario(Shape shape) : shape_(shape), host_({.ground_truth = true, .check_invariants = true}) {
    for (int i = 0; i < shape.pcpus; ++i) {
      EXPECT_TRUE(host_.AddPcpu(shape.features, shape.reservation, shape.static_guest_counters).ok());
    }
  }

  int AddVcpu(int h, SwitchPolicy policy, EventFilter filter = {}) {
    VcpuPmuConfig config;
    config.h = h;
    config.policy = policy;
    config.features = shape_.features;
    config.filter = filter;
    absl::StatusOr<int> id = host_.AddVcpu(std::move(config));
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or(-1);
  }

  void Run(int vcpu, int pcpu) {
    ASSERT_TRUE(host_.Load(vcpu, pcpu).ok());
    ASSERT_TRUE(host_.EnterGuest(pcpu).ok());
  }
  void Stop(int pcpu) {
    ASSERT_TRUE(host_.ExitGuest(pcpu).ok());
    ASSERT_TRUE(host_.Put(pcpu).ok());
  }

  uint64_t GuestRead(int pcpu, pmu::PmuRegRef ref, pmu::ExceptionLevel el = pmu::ExceptionLevel::kEl1) {
    absl::StatusOr<pmu::AccessResult> r = host_.GuestAccess(pcpu, ref, 0, false, el);
    EXPECT_TRUE(r.ok() && r->ok()) << pmu::RegisterName(ref);
    return r.ok() ? r->value : 0;
  }
  void GuestWrite(int pcpu, pmu::PmuRegRef ref, uint64_t value, pmu::ExceptionLevel el = pmu::ExceptionLevel::kEl1) {
    absl::StatusOr<pmu::AccessResult> r = host_.GuestAccess(pcpu, ref, value, true, el);
    EXPECT_TRUE(r.ok() && r->ok()) << pmu::RegisterName(ref);
  }
  // The guest arms counter 0 to sample event INST_RETIRED, `before_wrap` events before the wrap.
  void GuestArmSampling(int pcpu, uint64_t before_wrap) {
    GuestWrite(pcpu, {pmu::PmuReg::kPmevtyper, 0}, pmu::kEventInstRetired);
    GuestWrite(pcpu, {pmu::PmuReg::kPmevcntr, 0}, 0x100000000ull - before_wrap);
    GuestWrite(pcpu, {pmu::PmuReg::kPmintenset}, 1);
    GuestWrite(pcpu, {pmu::PmuReg::kPmcntenset}, 1);
    GuestWrite(pcpu, {pmu::PmuReg::kPmcr}, pmu::pmcr::kE);
  }
  void GuestEvents(int pcpu, uint64_t count, uint16_t event = pmu::kEventInstRetired) {
    ASSERT_TRUE(host_.CountGuestEvent(pcpu, event, count, pmu::ExceptionLevel::kEl1).ok());
  }
  // The guest's overflow handler: read PMOVSSET, clear what it saw.
  uint64_t GuestHandler(int pcpu) {
    const uint64_t flags = GuestRead(pcpu, {pmu::PmuReg::kPmovsset});
    if (flags != 0) GuestWrite(pcpu, {pmu::PmuReg::kPmovsclr}, flags);
    return flags;
  }

  PartitionedHost& host() { return host_; }
  OverflowCounts Overflows(int vcpu) const { return host_.ledger().Report(OverflowOwner::Vcpu(vcpu)); }

 private:
  Shape shape_;
  PartitionedHost host_;
};

}  // namespace fleetpmu::partition::testing

#endif  // FLEETPMU_TESTS_HYPERVISOR_SHIM_PARTITION_SCENARIO_H_
