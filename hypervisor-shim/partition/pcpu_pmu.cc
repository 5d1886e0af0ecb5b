#include "hypervisor-shim/partition/pcpu_pmu.h"

namespace fleetpmu::partition {

using pmu::ExceptionLevel;
using pmu::PmuReg;

PcpuPmu::PcpuPmu(int index_in, const pmu::PmuFeatures& features, HostReservation reservation_in,
                 int static_guest_counters_in, bool linux_perf_defaults)
    : index(index_in),
      hw(features),
      reservation(reservation_in),
      static_guest_counters(static_guest_counters_in) {
  if (!linux_perf_defaults) {
    host_pmcr = 0;
    host_mdcr = static_cast<uint64_t>(features.num_counters);
    return;
  }
  // Linux perf runs with PMCR.E and the long cycle counter on, and 64-bit event counters where
  // PMUv3p5 offers them; the same width applies to the host range in guest context (HLP).
  host_pmcr = pmu::pmcr::kE | pmu::pmcr::kLc | (features.p5 ? pmu::pmcr::kLp : 0);
  host_mdcr = static_cast<uint64_t>(features.num_counters) | pmu::mdcr::kHpme |
              (features.p5 ? pmu::mdcr::kHlp : 0);
  hw.Write({PmuReg::kMdcrEl2}, host_mdcr, ExceptionLevel::kEl2);
  hw.Write({PmuReg::kPmcr}, host_pmcr, ExceptionLevel::kEl2);
}

}  // namespace fleetpmu::partition
