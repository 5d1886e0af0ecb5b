// fleetpmu-kvm-canary: runs one canary VM on this host's KVM and prints the kvm backend's JSON
// summary (kvm_summary.h). A small static driver for hosts where the full shim and its shared
// libraries are not installed (the emulated ARM test's initramfs); fleetpmu-shim with
// `backend: BACKEND_KVM` runs the same code. Exit status: 0 valid, 1 ran but invalid, 2 refused
// (a clear error on stderr, the JSON names it too).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "hypervisor-shim/kvm/canary_vm.h"
#include "hypervisor-shim/kvm/host_counters.h"
#include "hypervisor-shim/kvm/kvm_device.h"
#include "hypervisor-shim/kvm/kvm_summary.h"

ABSL_FLAG(std::string, kvm_device, "/dev/kvm", "KVM device");
ABSL_FLAG(std::string, vm_id, "canary", "VM identity in the summary");
ABSL_FLAG(int, h, -1, "guest event counters; -1 = half the host's N");
ABSL_FLAG(int, vcpus, 1, "vCPUs");
ABSL_FLAG(std::string, events, "0x08", "event numbers for counters [0,h), round-robin (comma list)");
ABSL_FLAG(std::string, periods, "", "sample period per entry of --events (comma list; empty = --sample_period)");
ABSL_FLAG(uint64_t, sample_period, 100000, "events between overflows");
ABSL_FLAG(uint64_t, wraps, 1000, "wraps per sampling counter");
ABSL_FLAG(bool, cycle_counter, true, "also sample with the cycle counter");
ABSL_FLAG(uint64_t, cycle_period, 0, "cycle counter period; 0 = --sample_period");
ABSL_FLAG(std::string, host_events, "", "host perf events name:code[,name:code...], pinned on every CPU");
ABSL_FLAG(absl::Duration, guest_timeout, absl::Seconds(30), "the canary's own time budget");
ABSL_FLAG(absl::Duration, host_timeout, absl::Seconds(60), "stop the vCPUs after this");

namespace {

bool ParseNumbers(const std::string& list, std::vector<uint64_t>* out) {
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    uint64_t value = 0;
    if (absl::ConsumePrefix(&item, "0x") ? !absl::SimpleHexAtoi(item, &value) : !absl::SimpleAtoi(item, &value)) {
      return false;
    }
    out->push_back(value);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Runs the kvm backend's canary guest once and prints a JSON verdict.");
  absl::ParseCommandLine(argc, argv);
  const absl::Time start = absl::Now();

  fleetpmu::kvm::CanaryVmConfig config;
  config.vm_id = absl::GetFlag(FLAGS_vm_id);
  if (absl::GetFlag(FLAGS_h) >= 0) config.h = static_cast<uint32_t>(absl::GetFlag(FLAGS_h));
  config.vcpus = absl::GetFlag(FLAGS_vcpus);
  std::vector<uint64_t> events, periods;
  if (!ParseNumbers(absl::GetFlag(FLAGS_events), &events) || !ParseNumbers(absl::GetFlag(FLAGS_periods), &periods)) {
    std::cerr << "fleetpmu-kvm-canary: --events and --periods take comma-separated numbers\n";
    return 2;
  }
  config.events.assign(events.begin(), events.end());
  config.periods = periods;
  config.sample_period = absl::GetFlag(FLAGS_sample_period);
  config.wraps = absl::GetFlag(FLAGS_wraps);
  config.use_cycle_counter = absl::GetFlag(FLAGS_cycle_counter);
  config.cycle_period = absl::GetFlag(FLAGS_cycle_period);
  config.guest_timeout = absl::GetFlag(FLAGS_guest_timeout);
  config.host_timeout = absl::GetFlag(FLAGS_host_timeout);

  std::vector<fleetpmu::kvm::HostEventSpec> host_events;
  for (absl::string_view item : absl::StrSplit(absl::GetFlag(FLAGS_host_events), ',', absl::SkipWhitespace())) {
    std::vector<std::string> parts = absl::StrSplit(item, ':');
    std::vector<uint64_t> code;
    if (parts.size() != 2 || !ParseNumbers(parts[1], &code) || code.size() != 1) {
      std::cerr << "fleetpmu-kvm-canary: --host_events takes name:code pairs\n";
      return 2;
    }
    host_events.push_back({parts[0], static_cast<uint32_t>(code[0]), true, {}});
  }

  absl::StatusOr<fleetpmu::kvm::KvmDevice> device = fleetpmu::kvm::KvmDevice::Open(absl::GetFlag(FLAGS_kvm_device));
  if (!device.ok()) {
    std::cerr << "fleetpmu-kvm-canary: " << device.status().message() << "\n";
    return 2;
  }
  fleetpmu::kvm::KvmRunSummary summary;
  summary.facts = device->facts();
  summary.kernel = fleetpmu::kvm::KernelRelease();
  absl::StatusOr<fleetpmu::kvm::HostCounters> host = fleetpmu::kvm::HostCounters::Open(host_events);
  if (!host.ok()) {
    std::cerr << "fleetpmu-kvm-canary: " << host.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<fleetpmu::kvm::CanaryVmResult> result = fleetpmu::kvm::RunCanaryVm(*device, config);
  if (result.ok()) {
    summary.vms.push_back(std::move(*result));
  } else {
    summary.refused.emplace_back(config.vm_id, std::string(result.status().message()));
    std::cerr << "fleetpmu-kvm-canary: " << result.status().message() << "\n";
  }
  if (absl::StatusOr<std::vector<fleetpmu::kvm::HostCpuCounters>> counters = host->Read(); counters.ok()) {
    summary.host_counters = std::move(*counters);
  }
  summary.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::cout << fleetpmu::kvm::KvmSummaryJson(summary) << std::endl;
  if (!summary.refused.empty()) return 2;
  return fleetpmu::kvm::SummaryValid(summary) ? 0 : 1;
}
