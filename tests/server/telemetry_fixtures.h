// Test fixtures shared by the server tests: a temporary directory that cleans up after itself,
// and small, valid telemetry (hosts, VMs, reports, batches) to store, validate and query.
//
// Every builder returns data that passes BatchValidator with the host from MakeHostInfo, so a
// test changes one field to make it invalid. Times are real Unix ns near kBaseUnixNs.
#ifndef FLEETPMU_TESTS_SERVER_TELEMETRY_FIXTURES_H_
#define FLEETPMU_TESTS_SERVER_TELEMETRY_FIXTURES_H_

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

#include "fleetpmu/v1/ingest.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::server::testing {

// 2024-01-01T00:00:00Z.
inline constexpr int64_t kBaseUnixNs = int64_t{1704067200} * 1000000000;
inline constexpr int64_t kSecondNs = 1000000000;
inline constexpr uint32_t kCycleCounterBit = 1u << 31;

// A fresh directory under $TEST_TMPDIR or /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/fleetpmu-XXXXXX";
    char* made = mkdtemp(pattern.data());
    path_ = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A host with `pcpus` pCPUs of N = `counters`, FGT and HPMN0.
inline fleetpmu::v1::HostInfo MakeHostInfo(const std::string& host_id, uint32_t pcpus = 4,
                                           uint32_t counters = 6) {
  fleetpmu::v1::HostInfo info;
  info.set_host_id(host_id);
  info.set_arch("aarch64");
  info.set_kernel("6.8.0-fleetpmu");
  info.set_backend(fleetpmu::v1::BACKEND_SIM);
  info.set_reservation_mode(fleetpmu::v1::RESERVATION_MODE_STATIC);
  info.set_shim_version("0.1.0");
  info.set_agent_version("0.1.0");
  info.set_vhe(true);
  (*info.mutable_labels())["rack"] = "r1";
  for (uint32_t i = 0; i < pcpus; ++i) {
    fleetpmu::v1::PcpuPmu* pcpu = info.add_pcpus();
    pcpu->set_pcpu(i);
    pcpu->set_pmu_id("armv8_pmuv3_0");
    pcpu->set_num_counters(counters);
    pcpu->set_pmuv3_version("3.7");
    pcpu->set_pmuver(7);
    pcpu->set_has_fgt(true);
    pcpu->set_has_hpmn0(true);
    pcpu->set_cpu_model("sim");
  }
  return info;
}

inline fleetpmu::v1::VmInfo MakeVm(const std::string& vm_id, const std::string& tenant_id,
                                   uint32_t vcpus = 2, uint32_t h = 3) {
  fleetpmu::v1::VmInfo vm;
  vm.set_vm_id(vm_id);
  vm.set_tenant_id(tenant_id);
  vm.set_vcpus(vcpus);
  vm.set_guest_counters(h);
  vm.set_guest_visible_counters(h);
  vm.set_policy(fleetpmu::v1::POLICY_REVIEWED);
  vm.set_implementation(fleetpmu::v1::PMU_IMPLEMENTATION_PARTITIONED);
  return vm;
}

inline uint32_t GuestMask(uint32_t h) { return (h == 0 ? 0u : ((1u << h) - 1)) | kCycleCounterBit; }

inline fleetpmu::v1::LatencyHistogram MakeHistogram(uint64_t fast, uint64_t slow) {
  fleetpmu::v1::LatencyHistogram histogram;
  histogram.add_bucket_upper_bounds_ns(1000);
  histogram.add_bucket_upper_bounds_ns(10000);
  histogram.add_bucket_counts(fast);
  histogram.add_bucket_counts(slow);
  histogram.add_bucket_counts(0);
  histogram.set_sum_ns(fast * 500 + slow * 5000);
  histogram.set_count(fast + slow);
  return histogram;
}

inline fleetpmu::v1::VcpuStats MakeVcpuStats(const fleetpmu::v1::VmInfo& vm, uint32_t vcpu,
                                             int64_t start, int64_t end, uint64_t lost = 1) {
  fleetpmu::v1::VcpuStats stats;
  stats.mutable_interval()->set_start_unix_ns(start);
  stats.mutable_interval()->set_end_unix_ns(end);
  stats.set_vm_id(vm.vm_id());
  stats.set_vcpu(vcpu);
  stats.set_tenant_id(vm.tenant_id());
  stats.set_loads(100);
  stats.set_puts(100);
  stats.set_swaps_done(150);
  stats.set_swaps_skipped(50);
  stats.set_promotions(1);
  *stats.mutable_load_latency() = MakeHistogram(70, 5);
  *stats.mutable_put_latency() = MakeHistogram(70, 5);
  stats.set_register_accesses(3000);
  (*stats.mutable_traps_by_register())["PMOVSSET_EL0"] = 2;
  stats.set_virtual_irq_assertions(4);
  stats.mutable_overflows()->set_delivered(10);
  stats.mutable_overflows()->set_lost(lost);
  if (lost > 0) {
    fleetpmu::v1::LostReasonCount* reason = stats.add_lost_by_reason();
    reason->set_reason(fleetpmu::v1::LOST_REASON_FLAG_CLEARED_UNSEEN);
    reason->set_count(lost);
  }
  stats.set_run_time_ns(static_cast<uint64_t>(end - start) / 2);
  stats.set_ownership_at_end(fleetpmu::v1::OWNERSHIP_STATE_GUEST_OWNED);
  return stats;
}

// One report of `host_id` over [start, start + 10 s): VM `vm` (tenant `tenant`, 2 vCPUs, h=3)
// ran vCPU 0 on pCPU 0 for half the interval and vCPU 1 on pCPU 1 for a quarter; one lost
// guest wrap on pCPU 0 and one delivered host wrap on pCPU 2.
inline fleetpmu::v1::TelemetryReport MakeReport(const std::string& host_id, int64_t start,
                                                const std::string& vm = "vm-1",
                                                const std::string& tenant = "tenant-a") {
  const int64_t length = 10 * kSecondNs;
  const int64_t end = start + length;
  fleetpmu::v1::TelemetryReport report;
  report.set_host_id(host_id);
  report.mutable_interval()->set_start_unix_ns(start);
  report.mutable_interval()->set_end_unix_ns(end);
  const fleetpmu::v1::VmInfo info = MakeVm(vm, tenant);
  *report.add_vms() = info;
  *report.add_vcpu_stats() = MakeVcpuStats(info, 0, start, end);
  *report.add_vcpu_stats() = MakeVcpuStats(info, 1, start, end, 0);

  for (uint32_t pcpu = 0; pcpu < 2; ++pcpu) {
    fleetpmu::v1::OwnershipSample* sample = report.add_ownership();
    sample->set_pcpu(pcpu);
    sample->mutable_interval()->set_start_unix_ns(start);
    sample->mutable_interval()->set_end_unix_ns(end);
    fleetpmu::v1::OwnerResidency* guest = sample->add_residencies();
    guest->set_owner_kind(fleetpmu::v1::OWNER_KIND_GUEST);
    guest->set_vm_id(vm);
    guest->set_vcpu(pcpu);
    guest->set_tenant_id(tenant);
    guest->set_counter_mask(GuestMask(3));
    guest->set_resident_ns(static_cast<uint64_t>(pcpu == 0 ? length / 2 : length / 4));
    fleetpmu::v1::OwnerResidency* host = sample->add_residencies();
    host->set_owner_kind(fleetpmu::v1::OWNER_KIND_HOST);
    host->set_counter_mask(0x38);  // [3,6)
    host->set_resident_ns(static_cast<uint64_t>(length));
  }

  fleetpmu::v1::OverflowEvent* lost = report.add_overflow_events();
  lost->set_time_unix_ns(start + kSecondNs);
  lost->set_pcpu(0);
  lost->set_counter(1);
  lost->set_owner_kind(fleetpmu::v1::OWNER_KIND_GUEST);
  lost->set_vm_id(vm);
  lost->set_vcpu(0);
  lost->set_tenant_id(tenant);
  lost->set_event_code(0x08);
  lost->set_overflow_class(fleetpmu::v1::OVERFLOW_CLASS_LOST);
  lost->set_lost_reason(fleetpmu::v1::LOST_REASON_FLAG_CLEARED_UNSEEN);

  fleetpmu::v1::OverflowEvent* delivered = report.add_overflow_events();
  delivered->set_time_unix_ns(start + 2 * kSecondNs);
  delivered->set_pcpu(2);
  delivered->set_counter(4);
  delivered->set_owner_kind(fleetpmu::v1::OWNER_KIND_HOST);
  delivered->set_host_event("cycles");
  delivered->set_event_code(0x11);
  delivered->set_overflow_class(fleetpmu::v1::OVERFLOW_CLASS_DELIVERED);
  delivered->set_wrap_to_handler_ns(2000);

  fleetpmu::v1::HostCounterStats* counters = report.add_host_counters();
  counters->set_pcpu(2);
  counters->mutable_interval()->set_start_unix_ns(start);
  counters->mutable_interval()->set_end_unix_ns(end);
  counters->set_host_events(2);
  counters->set_enabled_ns(static_cast<uint64_t>(2 * length));
  counters->set_running_ns(static_cast<uint64_t>(length));
  counters->mutable_overflows()->set_delivered(1);
  counters->mutable_overflows()->set_lost(2);
  fleetpmu::v1::LostReasonCount* host_lost = counters->add_lost_by_reason();
  host_lost->set_reason(fleetpmu::v1::LOST_REASON_HOST_CLOBBERED);
  host_lost->set_count(2);

  fleetpmu::v1::TelemetryDrops* drops = report.add_drops();
  drops->set_stage(fleetpmu::v1::DROP_STAGE_SHIM_RING);
  drops->set_count(3);
  drops->mutable_interval()->set_start_unix_ns(start);
  drops->mutable_interval()->set_end_unix_ns(end);
  return report;
}

inline fleetpmu::v1::Batch MakeBatch(const std::string& host_id, uint64_t epoch, uint64_t seq,
                                     int64_t start, int reports = 1) {
  fleetpmu::v1::Batch batch;
  batch.set_agent_epoch(epoch);
  batch.set_seq(seq);
  batch.set_created_unix_ns(start + reports * 10 * kSecondNs);
  for (int i = 0; i < reports; ++i) {
    *batch.add_reports() = MakeReport(host_id, start + i * 10 * kSecondNs);
  }
  return batch;
}

}  // namespace fleetpmu::server::testing

#endif  // FLEETPMU_TESTS_SERVER_TELEMETRY_FIXTURES_H_
