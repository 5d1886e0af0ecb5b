#include "hypervisor-shim/pmu/pmu_registers.h"

#include <array>
#include <charconv>

namespace fleetpmu::pmu {
namespace {

struct NamedRegister {
  PmuReg reg;
  std::string_view name;
};

constexpr std::array<NamedRegister, 15> kFixedNames = {{
    {PmuReg::kPmcr, "PMCR_EL0"},
    {PmuReg::kPmcntenset, "PMCNTENSET_EL0"},
    {PmuReg::kPmcntenclr, "PMCNTENCLR_EL0"},
    {PmuReg::kPmintenset, "PMINTENSET_EL1"},
    {PmuReg::kPmintenclr, "PMINTENCLR_EL1"},
    {PmuReg::kPmovsset, "PMOVSSET_EL0"},
    {PmuReg::kPmovsclr, "PMOVSCLR_EL0"},
    {PmuReg::kPmselr, "PMSELR_EL0"},
    {PmuReg::kPmswinc, "PMSWINC_EL0"},
    {PmuReg::kPmxevcntr, "PMXEVCNTR_EL0"},
    {PmuReg::kPmxevtyper, "PMXEVTYPER_EL0"},
    {PmuReg::kPmccntr, "PMCCNTR_EL0"},
    {PmuReg::kPmccfiltr, "PMCCFILTR_EL0"},
    {PmuReg::kPmuserenr, "PMUSERENR_EL0"},
    {PmuReg::kMdcrEl2, "MDCR_EL2"},
}};

// Parses "<prefix><n>_EL0" with n in [0,30].
std::optional<uint8_t> IndexedSuffix(std::string_view name, std::string_view prefix) {
  constexpr std::string_view kSuffix = "_EL0";
  if (name.size() <= prefix.size() + kSuffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(kSuffix)) {
    return std::nullopt;
  }
  std::string_view digits =
      name.substr(prefix.size(), name.size() - prefix.size() - kSuffix.size());
  if (digits.empty() || digits.size() > 2 || (digits.size() == 2 && digits[0] == '0')) {
    return std::nullopt;
  }
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || value >= kMaxEventCounters) {
    return std::nullopt;
  }
  return static_cast<uint8_t>(value);
}

}  // namespace

std::string RegisterName(PmuRegRef ref) {
  switch (ref.reg) {
    case PmuReg::kPmevcntr:
      return "PMEVCNTR" + std::to_string(ref.n) + "_EL0";
    case PmuReg::kPmevtyper:
      return "PMEVTYPER" + std::to_string(ref.n) + "_EL0";
    default:
      for (const auto& named : kFixedNames) {
        if (named.reg == ref.reg) return std::string(named.name);
      }
  }
  return "UNKNOWN";
}

std::optional<PmuRegRef> ParseRegisterName(std::string_view name) {
  for (const auto& named : kFixedNames) {
    if (named.name == name) return PmuRegRef{named.reg, 0};
  }
  if (auto n = IndexedSuffix(name, "PMEVCNTR")) return PmuRegRef{PmuReg::kPmevcntr, *n};
  if (auto n = IndexedSuffix(name, "PMEVTYPER")) return PmuRegRef{PmuReg::kPmevtyper, *n};
  return std::nullopt;
}

}  // namespace fleetpmu::pmu
