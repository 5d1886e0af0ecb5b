#include "hypervisor-shim/kvm/kvm_backend.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "hypervisor-shim/kvm/canary_verdict.h"
#include "hypervisor-shim/kvm/kvm_report.h"
#include "hypervisor-shim/kvm/kvm_summary.h"

namespace fleetpmu::kvm {
namespace {

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(text.str()));
}

// cpu -> the arm_pmu instance covering it (the perf event source name), "" where none.
std::map<int, std::string> CpuPmuNames() {
  std::map<int, std::string> names;
  const std::string base = "/sys/bus/event_source/devices";
  DIR* dir = opendir(base.c_str());
  if (dir == nullptr) return names;
  while (struct dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.rfind("armv8", 0) != 0 && name.rfind("arm_", 0) != 0) continue;
    for (int cpu : ParseCpuList(ReadTrimmed(base + "/" + name + "/cpus"))) names.emplace(cpu, name);
  }
  closedir(dir);
  return names;
}

std::string Hostname() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0' ? name : "localhost";
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvmBackend>> KvmBackend::Create(const v1::KvmHost& config, KvmBackendOptions options) {
  absl::StatusOr<KvmDevice> device = KvmDevice::Open(config.kvm_device());
  if (!device.ok()) return device.status();
  // Known before the first report: HostInfo's N bounds every counter index the server accepts.
  absl::StatusOr<VpmuSupport> support = ProbeHostVpmu(*device);
  if (!support.ok()) return support.status();
  std::vector<HostEventSpec> specs;
  for (const v1::HostEvent& event : config.host_events()) {
    HostEventSpec spec{event.name(), event.event_code(), event.pinned(), {}};
    for (uint32_t pcpu : event.pcpus()) spec.cpus.push_back(static_cast<int>(pcpu));
    specs.push_back(std::move(spec));
  }
  absl::StatusOr<HostCounters> host = HostCounters::Open(specs);
  if (!host.ok()) return host.status();
  std::unique_ptr<KvmBackend> backend(new KvmBackend(config, std::move(options), std::move(*device), std::move(*host)));
  backend->support_ = *support;
  backend->reported_until_unix_ns_ = absl::ToUnixNanos(absl::Now());
  if (absl::StatusOr<std::vector<HostCpuCounters>> now = backend->host_.Read(); now.ok()) {
    for (const HostCpuCounters& cpu : *now) backend->host_baseline_[cpu.cpu] = cpu;
  }
  KvmHostInfoInput info;
  info.host_id = Hostname();
  info.shim_version = backend->options_.shim_version;
  info.config = &backend->config_;
  info.facts = backend->device_.facts();
  info.support = backend->support_;
  info.cpus = OnlineCpus();
  info.cpu_pmus = CpuPmuNames();
  backend->host_info_ = BuildKvmHostInfo(info);
  return backend;
}

CanaryVmConfig KvmBackend::VmConfig(const v1::KvmVm& vm) const {
  CanaryVmConfig c;
  c.vm_id = vm.vm_id();
  c.tenant_id = vm.tenant_id();
  c.vcpus = static_cast<int>(vm.vcpus());
  if (vm.has_h()) c.h = vm.h();
  c.memory_bytes = uint64_t{vm.memory_mib()} << 20;
  c.events.assign(vm.canary().events().begin(), vm.canary().events().end());
  c.periods.assign(vm.canary().sample_periods().begin(), vm.canary().sample_periods().end());
  c.sample_period = vm.canary().sample_period();
  c.wraps = vm.canary().wraps();
  c.use_cycle_counter = vm.canary().use_cycle_counter();
  c.cycle_period = vm.canary().cycle_sample_period();
  c.guest_timeout = ToDuration(vm.canary().timeout());
  c.host_timeout = c.guest_timeout + absl::Seconds(30);
  for (const v1::EventFilterRange& range : vm.event_filter().ranges()) {
    c.filter.push_back(PmuFilterRange{static_cast<uint16_t>(range.base_event()), static_cast<uint16_t>(range.nevents()),
                                      range.action() == v1::FILTER_ACTION_ALLOW});
  }
  return c;
}

absl::Status KvmBackend::RunRound() {
  results_.clear();
  refused_.clear();
  for (const v1::KvmVm& vm : config_.vms()) {
    absl::StatusOr<CanaryVmResult> result = RunCanaryVm(device_, VmConfig(vm));
    if (!result.ok()) {
      refused_.emplace_back(vm.vm_id(), std::string(result.status().message()));
      continue;
    }
    results_.push_back(*result);
    unreported_.push_back(std::move(*result));
  }
  return absl::OkStatus();
}

v1::TelemetryReport KvmBackend::TakeReport() {
  KvmReportInput input;
  input.host_id = host_info_.host_id();
  input.start_unix_ns = reported_until_unix_ns_;
  int64_t end = absl::ToUnixNanos(absl::Now());
  for (const CanaryVmResult& run : unreported_) end = std::max(end, run.end_unix_ns + 1);
  input.end_unix_ns = std::max(end, input.start_unix_ns + 1);
  input.config = &config_;
  input.support = support_;
  input.runs = std::move(unreported_);
  unreported_.clear();
  input.overflow_event_limit = options_.overflow_event_limit;
  for (const v1::PcpuPmu& pcpu : host_info_.pcpus()) input.cpus.push_back(static_cast<int>(pcpu.pcpu()));
  if (absl::StatusOr<std::vector<HostCpuCounters>> now = host_.Read(); now.ok()) {
    for (const HostCpuCounters& cpu : *now) {
      HostCpuCounters& base = host_baseline_[cpu.cpu];
      HostCpuCounters delta = cpu;
      delta.enabled_ns = cpu.enabled_ns - base.enabled_ns;
      delta.running_ns = cpu.running_ns - base.running_ns;
      delta.value = cpu.value - base.value;
      input.host_deltas.push_back(delta);
      base = cpu;
    }
  }
  reported_until_unix_ns_ = input.end_unix_ns;
  v1::TelemetryReport report = BuildKvmReport(input);
  if (!host_info_sent_) {
    *report.mutable_host_info() = host_info_;
    host_info_sent_ = true;
  }
  return report;
}

std::string KvmBackend::SummaryJson(double wall_seconds) const {
  KvmRunSummary summary;
  summary.facts = device_.facts();
  summary.kernel = KernelRelease();
  summary.vms = results_;
  summary.refused = refused_;
  if (absl::StatusOr<std::vector<HostCpuCounters>> now = host_.Read(); now.ok()) summary.host_counters = *now;
  summary.wall_seconds = wall_seconds;
  return KvmSummaryJson(summary);
}

bool KvmBackend::valid() const {
  KvmRunSummary summary;
  summary.vms = results_;
  summary.refused = refused_;
  return SummaryValid(summary);
}

}  // namespace fleetpmu::kvm
