#include "hypervisor-shim/kvm/host_counters.h"

#include <dirent.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "hypervisor-shim/kvm/kvm_error.h"

namespace fleetpmu::kvm {
namespace {

constexpr char kEventSources[] = "/sys/bus/event_source/devices";

std::string ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(text.str()));
}

// cpu -> perf type of the arm_pmu instance covering it (armv8_pmuv3_0, armv8_cortex_a57, ...).
std::map<int, uint32_t> CpuPmuTypes() {
  std::map<int, uint32_t> types;
  DIR* dir = opendir(kEventSources);
  if (dir == nullptr) return types;
  while (struct dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.rfind("armv8", 0) != 0 && name.rfind("arm_", 0) != 0) continue;
    const std::string base = absl::StrCat(kEventSources, "/", name);
    uint32_t type = 0;
    if (!absl::SimpleAtoi(ReadTrimmed(base + "/type"), &type)) continue;
    for (int cpu : ParseCpuList(ReadTrimmed(base + "/cpus"))) types.emplace(cpu, type);
  }
  closedir(dir);
  return types;
}

}  // namespace

std::vector<int> ParseCpuList(const std::string& list) {
  std::vector<int> cpus;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> ends = absl::StrSplit(part, '-');
    int first = 0, last = 0;
    if (!absl::SimpleAtoi(ends[0], &first)) continue;
    last = first;
    if (ends.size() == 2 && !absl::SimpleAtoi(ends[1], &last)) continue;
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

std::vector<int> OnlineCpus() {
  std::vector<int> cpus = ParseCpuList(ReadTrimmed("/sys/devices/system/cpu/online"));
  if (cpus.empty()) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (int cpu = 0; cpu < n; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

absl::StatusOr<HostCounters> HostCounters::Open(const std::vector<HostEventSpec>& events) {
  HostCounters counters;
  if (events.empty()) return counters;
  const std::map<int, uint32_t> pmu_types = CpuPmuTypes();
  const std::vector<int> online = OnlineCpus();
  for (const HostEventSpec& spec : events) {
    for (int cpu : spec.cpus.empty() ? online : spec.cpus) {
      struct perf_event_attr attr = {};
      attr.size = sizeof(attr);
      const auto type = pmu_types.find(cpu);
      attr.type = type != pmu_types.end() ? type->second : uint32_t{PERF_TYPE_RAW};
      attr.config = spec.event_code;
      attr.pinned = spec.pinned ? 1 : 0;
      attr.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
      const int fd = static_cast<int>(syscall(SYS_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC));
      if (fd < 0) {
        return SyscallError(absl::StrCat("host event ", spec.name, " (event 0x", absl::Hex(spec.event_code), ", perf type ",
                                         attr.type, ") on CPU ", cpu),
                            "perf_event_open");
      }
      counters.events_.push_back(OpenEvent{cpu, spec.name, UniqueFd(fd)});
    }
  }
  return counters;
}

absl::StatusOr<std::vector<HostCpuCounters>> HostCounters::Read() const {
  std::map<int, HostCpuCounters> by_cpu;
  for (const OpenEvent& event : events_) {
    uint64_t values[3] = {};  // value, time_enabled, time_running
    const ssize_t n = read(event.fd.get(), values, sizeof(values));
    HostCpuCounters& cpu = by_cpu[event.cpu];
    cpu.cpu = event.cpu;
    ++cpu.events;
    // A pinned event in error state reads 0 bytes: enabled but never running, which is what it is.
    if (n == 0) continue;
    if (n != static_cast<ssize_t>(sizeof(values))) {
      return SyscallError(absl::StrCat("reading host event ", event.name, " on CPU ", event.cpu), "read");
    }
    cpu.value += values[0];
    cpu.enabled_ns += values[1];
    cpu.running_ns += values[2];
  }
  std::vector<HostCpuCounters> result;
  for (auto& [cpu, counters] : by_cpu) result.push_back(counters);
  return result;
}

}  // namespace fleetpmu::kvm
