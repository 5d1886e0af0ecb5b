// InvariantChecker: PMU.md section 4, items 1-17, checked on a PartitionedHost.
//
// State invariants (2, 3, 4, 5, 9, 11, 14) are checked by CheckState(), callable after every
// step. Transition invariants (1, 7, 8, 10, 12, 13, 15) need the state before and after a load or
// put; PartitionedHost takes a PcpuSnapshot and calls the matching Check* method. Item 6 follows
// the overflow ledger (every lost wrap is a violation). Items 16 and 17 compare each guest read and
// the virtual interrupt line with the vCPU's ideal vPMU (ground truth must be on); item 16's "with
// and without FGT" half is a property test that runs one script on both kinds of host.
//
// The checker only reads; it never changes what it checks. Not thread-safe.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_INVARIANT_CHECKER_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_INVARIANT_CHECKER_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "hypervisor-shim/partition/pcpu_pmu.h"
#include "hypervisor-shim/partition/vcpu_pmu.h"
#include "hypervisor-shim/pmu/pmuv3.h"

namespace fleetpmu::partition {

class PartitionedHost;

struct PcpuSnapshot {
  pmu::Pmuv3State hw;
  pmu::AccessCounts counts;
  std::array<OverflowOwner, 32> counter_owner;
  uint64_t host_accesses = 0;  // host reservation's accesses so far
};

struct InvariantViolation {
  int invariant = 0;  // 1..17
  std::string message;
};

class InvariantChecker {
 public:
  static constexpr int kCount = 17;
  static constexpr size_t kKeptMessages = 64;

  void Record(int invariant, std::string message);
  uint64_t count(int invariant) const { return counts_[invariant]; }
  uint64_t total() const;
  // The first kKeptMessages violations, in order.
  const std::vector<InvariantViolation>& first() const { return first_; }
  // "1:0 2:0 ... 17:3"
  std::string Summary() const;

  static PcpuSnapshot Snapshot(const PcpuPmu& pcpu);

  void CheckState(const PartitionedHost& host);
  // The state invariants of one pCPU and the vCPU loaded there.
  void CheckPcpuState(const PcpuPmu& pcpu);
  void CheckLoad(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& vcpu);
  void CheckEntry(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& vcpu);
  // After a guest access that promoted a FREE vCPU by a full load.
  void CheckPromotion(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& vcpu);
  void CheckPut(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& vcpu,
                bool was_guest_owned);
  // After host code that ends a load/put pair: host PMUSERENR/PMSELR as the host left them.
  void CheckHostUserState(const PcpuPmu& pcpu, uint64_t host_pmuserenr, uint64_t host_pmselr,
                          int vcpu_id);
  // What the guest saw against what its ideal vPMU answers (items 16, 17; 11 for PMCR reads).
  void CheckGuestAccess(const VcpuPmu& vcpu, pmu::PmuRegRef ref, bool is_write,
                        const pmu::AccessResult& actual, const pmu::AccessResult& ideal);
  void CheckGuestWrite(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& vcpu,
                       pmu::PmuRegRef ref, uint64_t value);
  void CheckLost(uint64_t total_lost, uint64_t total_misattributed);

 private:
  std::array<uint64_t, kCount + 1> counts_{};
  std::vector<InvariantViolation> first_;
  uint64_t lost_seen_ = 0;
  uint64_t misattributed_seen_ = 0;
};

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_INVARIANT_CHECKER_H_
