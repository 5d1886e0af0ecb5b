// The kvm backend's telemetry, built from what one or more canary rounds reported: pure
// functions (no KVM, no clock), so that tests can feed them canary results. How each record is
// derived is documented in kvm_backend.h.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_REPORT_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fleetpmu/v1/config.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"
#include "hypervisor-shim/kvm/canary_vm.h"
#include "hypervisor-shim/kvm/host_counters.h"
#include "hypervisor-shim/kvm/kvm_device.h"
#include "hypervisor-shim/kvm/vpmu.h"

namespace fleetpmu::kvm {

struct KvmHostInfoInput {
  std::string host_id;
  std::string shim_version;
  const v1::KvmHost* config = nullptr;
  KvmHostFacts facts;
  VpmuSupport support;
  std::vector<int> cpus;                 // online CPUs
  std::map<int, std::string> cpu_pmus;   // cpu -> arm_pmu perf source name
};
v1::HostInfo BuildKvmHostInfo(const KvmHostInfoInput& input);

struct KvmReportInput {
  std::string host_id;
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;               // > start_unix_ns and > every run's end_unix_ns
  const v1::KvmHost* config = nullptr;
  VpmuSupport support;
  std::vector<CanaryVmResult> runs;      // canary VM runs not yet reported, oldest first
  std::vector<HostCpuCounters> host_deltas;  // per CPU, since the previous report
  std::vector<int> cpus;                 // pCPUs of HostInfo: one OwnershipSample each
  size_t overflow_event_limit = 4096;
};
// The report for [start, end): VmInfo for every configured VM, VcpuStats for every vCPU of
// every run, OverflowEvents (lost first, bounded, drops counted), HostCounterStats, and one
// OwnershipSample per pCPU: each vCPU that ran there holds GENMASK(h-1,0) | BIT(31) for the
// time its thread ran there (CanaryVcpuResult.resident_ns_by_cpu, summed over the runs, at most
// the interval).
v1::TelemetryReport BuildKvmReport(const KvmReportInput& input);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_REPORT_H_
