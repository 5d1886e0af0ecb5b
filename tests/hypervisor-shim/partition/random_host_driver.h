// RandomHostDriver: seeded random interleavings of guest and host PMU activity on a
// PartitionedHost, for the property tests. Each Step() picks one action that is legal in the
// current state (load, enter, guest access, guest event, guest overflow handler, exit, put, host
// event, host register access, host interrupt) and records it, so a run can be replayed on
// another host (same script, different features) and any failure reproduced from its seed.
#ifndef FLEETPMU_TESTS_HYPERVISOR_SHIM_PARTITION_RANDOM_HOST_DRIVER_H_
#define FLEETPMU_TESTS_HYPERVISOR_SHIM_PARTITION_RANDOM_HOST_DRIVER_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "hypervisor-shim/partition/partitioned_host.h"

namespace fleetpmu::partition::testing {

struct HostShape {
  int pcpus = 2;
  int vcpus = 3;
  pmu::PmuFeatures features;
  HostReservation reservation = HostReservation::kDynamic;
  int static_guest_counters = 0;
  std::vector<int> h;                     // per vCPU
  std::vector<SwitchPolicy> policies;     // per vCPU
  bool host_perf_events = true;
  bool first_vcpu_trapped = false;  // vCPU 0 not partitioned: the emulated, trapped vPMU

  // A random shape; `fgt` and `policy` are chosen by the caller.
  static HostShape Random(std::mt19937_64& rng, bool fgt, SwitchPolicy policy);
  std::string Describe() const;
};

struct Action {
  enum class Kind : uint8_t {
    kLoad, kEnter, kExit, kPut, kGuestRead, kGuestWrite, kGuestEvent, kGuestHandler,
    kGuestIsb, kHostEvent, kHostUserWrite, kHostIrq, kAdvanceTime,
  };
  Kind kind;
  int pcpu = 0;
  int vcpu = 0;
  pmu::PmuRegRef reg{pmu::PmuReg::kPmcr};
  uint64_t value = 0;
  pmu::ExceptionLevel el = pmu::ExceptionLevel::kEl1;
  std::string Describe() const;
};

// What the guests observed, for comparing two hosts driven by one script.
struct Observation {
  int step;
  int vcpu;
  std::string what;
  uint64_t value;
  friend bool operator==(const Observation&, const Observation&) = default;
};

absl::Status BuildHost(const HostShape& shape, PartitionedHost& host);

class RandomHostDriver {
 public:
  RandomHostDriver(PartitionedHost& host, uint64_t seed) : host_(host), rng_(seed) {}

  // Picks and applies one legal action. Returns the status of the host call (never expected to
  // fail: an error is a bug in the driver or the host).
  absl::Status Step();
  // Applies a recorded action to this driver's host.
  absl::Status Apply(const Action& action);

  const std::vector<Action>& script() const { return script_; }
  const std::vector<Observation>& observations() const { return observations_; }

 private:
  Action Pick();
  uint64_t InterestingValue();
  pmu::PmuRegRef GuestRegister(int h);

  PartitionedHost& host_;
  std::mt19937_64 rng_;
  std::vector<Action> script_;
  std::vector<Observation> observations_;
  uint64_t now_ns_ = 0;
};

}  // namespace fleetpmu::partition::testing

#endif  // FLEETPMU_TESTS_HYPERVISOR_SHIM_PARTITION_RANDOM_HOST_DRIVER_H_
