// Host discovery: what the agent can learn about its machine's PMUs and KVM, as HostInfo facts.
//
// Every fact is optional. A missing or unreadable file leaves its field unset (never an error),
// so discovery runs unchanged on an arm64 server, in an arm64 VM under QEMU, and on an x86
// development box (where it finds no arm PMU and says so by leaving fields empty). The roots are
// parameters so that tests can point them at a prepared tree.
//
// KVM: the device node is opened read-only, probed with KVM_GET_API_VERSION and
// KVM_CHECK_EXTENSION on the PMU-related capabilities, and closed. On arm64 the per-vCPU PMU
// attributes (KVM_ARM_VCPU_PMU_V3_CTRL) need a VM and a vCPU; that probe belongs to the kvm
// backend of the shim, which reports it in its own HostInfo.
#ifndef FLEETPMU_AGENT_DISCOVERY_HOST_DISCOVERY_H_
#define FLEETPMU_AGENT_DISCOVERY_HOST_DISCOVERY_H_

#include <string>

#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::agent {

struct DiscoveryRoots {
  std::string sysfs = "/sys";
  std::string procfs = "/proc";
  std::string kvm_device = "/dev/kvm";
};

// Fills arch, kernel, pmu_devices, cpu_models, kvm_present and kvm_capabilities of `info`;
// leaves every other field alone.
void DiscoverHost(const DiscoveryRoots& roots, v1::HostInfo* info);

// "Neoverse-N1" for an arm64 implementer/part pair from /proc/cpuinfo, "" if unknown.
std::string ArmCpuName(unsigned implementer, unsigned part);

}  // namespace fleetpmu::agent

#endif  // FLEETPMU_AGENT_DISCOVERY_HOST_DISCOVERY_H_
