#include "hypervisor-shim/kvm/vpmu.h"

#include "absl/strings/str_cat.h"
#include "hypervisor-shim/kvm/kvm_uapi.h"

namespace fleetpmu::kvm {
namespace {

uint32_t PmcrN(uint64_t pmcr) { return static_cast<uint32_t>((pmcr >> 11) & 0x1f); }

}  // namespace

const char* CounterLimitName(CounterLimit limit) {
  switch (limit) {
    case CounterLimit::kAlreadyEqual: return "host_n";
    case CounterLimit::kSetNrCounters: return "set_nr_counters";
    case CounterLimit::kPmcrWrite: return "pmcr_write";
  }
  return "?";
}

absl::StatusOr<VpmuSupport> ProbeVpmu(const Vcpu& vcpu, const KvmHostFacts& facts) {
  VpmuSupport support;
  support.irq = vcpu.HasAttr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_IRQ);
  support.filter = vcpu.HasAttr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_FILTER);
  support.set_pmu = vcpu.HasAttr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_SET_PMU);
  support.set_nr_counters = vcpu.HasAttr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS);
  support.partition = vcpu.HasAttr(KVM_ARM_VCPU_PMU_V3_CTRL, FLEETPMU_KVM_ARM_VCPU_PMU_V3_ENABLE_PARTITION);
  support.pmcr_n_writable = facts.reg_mask_ranges;
  if (!support.irq) {
    return absl::UnimplementedError(absl::StrCat(vcpu.label(), ": KVM does not offer KVM_ARM_VCPU_PMU_V3_IRQ: ",
                                                 "no guest PMU interrupt, so no overflow can be delivered"));
  }
  // KVM resets PMCR_EL0 with N = the host PMU's counters: that is the most h can be.
  absl::StatusOr<uint64_t> pmcr = vcpu.GetReg(kRegPmcrEl0, "PMCR_EL0 (for the host's N)");
  if (!pmcr.ok()) return pmcr.status();
  support.host_n = PmcrN(*pmcr);
  return support;
}

absl::StatusOr<CounterLimit> ChooseCounterLimit(const VpmuSupport& support, uint32_t h, const std::string& vm) {
  if (h > support.host_n) {
    return absl::InvalidArgumentError(absl::StrCat("VM ", vm, ": h=", h, " exceeds the N=", support.host_n,
                                                   " event counters KVM offers a guest on this host (PMCR_EL0.N); "
                                                   "h must be at most ", support.host_n));
  }
  if (h == support.host_n) return CounterLimit::kAlreadyEqual;
  if (support.set_nr_counters) return CounterLimit::kSetNrCounters;
  // Only where KVM validates the write (ARM-EMULATION.md: on 6.1 it caused an interrupt storm).
  if (support.pmcr_n_writable) return CounterLimit::kPmcrWrite;
  return absl::UnimplementedError(absl::StrCat(
      "VM ", vm, ": h=", h, " < N=", support.host_n, " but this kernel cannot limit the guest's PMCR_EL0.N: it has ",
      "neither KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS nor KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES (Linux 6.8+); "
      "use h=", support.host_n, " or a newer host kernel"));
}

absl::Status ConfigureVmPmu(Vcpu& vcpu, const VpmuConfig& config, const VpmuSupport& support) {
  if (!config.filter.empty()) {
    if (!support.filter) {
      return absl::UnimplementedError(absl::StrCat(vcpu.label(), ": the VM has an event filter but KVM does not offer ",
                                                   "KVM_ARM_VCPU_PMU_V3_FILTER"));
    }
    for (const PmuFilterRange& range : config.filter) {
      struct kvm_pmu_event_filter filter = {};
      filter.base_event = range.base_event;
      filter.nevents = range.nevents;
      filter.action = range.allow ? KVM_PMU_EVENT_ALLOW : KVM_PMU_EVENT_DENY;
      if (absl::Status s = vcpu.SetAttr(absl::StrCat("PMU event filter ", range.allow ? "allow" : "deny", " [0x",
                                                     absl::Hex(range.base_event), ", +", range.nevents, ")"),
                                        KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_FILTER, &filter);
          !s.ok()) {
        return s;
      }
    }
  }
  if (config.limit == CounterLimit::kSetNrCounters) {
    const unsigned int n = config.h;
    if (absl::Status s = vcpu.SetAttr(absl::StrCat("limiting the guest to h=", config.h, " counters (SET_NR_COUNTERS)"),
                                      KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS, &n);
        !s.ok()) {
      return s;
    }
  }
  if (config.enable_partition && support.partition) {
    // The proposed attribute takes no value beyond its presence; a pointer to 1 is what the
    // posted series reads if it reads one.
    const int enable = 1;
    if (absl::Status s = vcpu.SetAttr("enabling the partitioned PMU (attribute 5)", KVM_ARM_VCPU_PMU_V3_CTRL,
                                      FLEETPMU_KVM_ARM_VCPU_PMU_V3_ENABLE_PARTITION, &enable);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ConfigureVcpuPmu(Vcpu& vcpu, const VpmuConfig& config) {
  const int irq = kPmuIrq;
  if (absl::Status s = vcpu.SetAttr(absl::StrCat("routing the PMU interrupt to PPI ", kPmuIrq), KVM_ARM_VCPU_PMU_V3_CTRL,
                                    KVM_ARM_VCPU_PMU_V3_IRQ, &irq);
      !s.ok()) {
    return s;
  }
  if (config.limit == CounterLimit::kPmcrWrite) {
    absl::StatusOr<uint64_t> pmcr = vcpu.GetReg(kRegPmcrEl0, "PMCR_EL0");
    if (!pmcr.ok()) return pmcr.status();
    const uint64_t limited = (*pmcr & ~(uint64_t{0x1f} << 11)) | (uint64_t{config.h} << 11);
    if (absl::Status s = vcpu.SetReg(kRegPmcrEl0, limited, "PMCR_EL0 with N = h"); !s.ok()) return s;
    absl::StatusOr<uint64_t> check = vcpu.GetReg(kRegPmcrEl0, "PMCR_EL0 after limiting N");
    if (!check.ok()) return check.status();
    if (PmcrN(*check) != config.h) {
      return absl::FailedPreconditionError(absl::StrCat(vcpu.label(), ": KVM accepted PMCR_EL0.N = ", config.h,
                                                        " but reads back N = ", PmcrN(*check)));
    }
  }
  return vcpu.SetAttr("initialising the guest PMU (after the vGIC)", KVM_ARM_VCPU_PMU_V3_CTRL,
                      KVM_ARM_VCPU_PMU_V3_INIT, nullptr);
}

}  // namespace fleetpmu::kvm
