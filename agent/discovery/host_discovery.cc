#include "agent/discovery/host_discovery.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fleetpmu::agent {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxPmuDevices = 64;
constexpr size_t kMaxCaps = 32;
constexpr size_t kMaxCapBytes = 255;
constexpr size_t kMaxCpus = 4096;

std::optional<std::string> ReadSmallFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 4096) text.resize(4096);
  return std::string(absl::StripAsciiWhitespace(text));
}

void DiscoverPmuDevices(const fs::path& sysfs, v1::HostInfo* info) {
  std::error_code ec;
  const fs::path root = sysfs / "bus" / "event_source" / "devices";
  std::vector<fs::path> devices;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) devices.push_back(e.path());
  std::sort(devices.begin(), devices.end());
  for (const fs::path& dir : devices) {
    if (static_cast<size_t>(info->pmu_devices_size()) >= kMaxPmuDevices) break;
    v1::PmuDevice* d = info->add_pmu_devices();
    d->set_name(dir.filename().string());
    uint32_t type = 0;
    if (auto t = ReadSmallFile(dir / "type"); t && absl::SimpleAtoi(*t, &type)) d->set_type(type);
    if (auto c = ReadSmallFile(dir / "cpus")) d->set_cpus(*c);
    else if (auto m = ReadSmallFile(dir / "cpumask")) d->set_cpus(*m);
    std::vector<fs::path> caps;
    for (const fs::directory_entry& e : fs::directory_iterator(dir / "caps", ec)) caps.push_back(e.path());
    std::sort(caps.begin(), caps.end());
    for (const fs::path& cap : caps) {
      if (d->caps_size() >= static_cast<int>(kMaxCaps)) break;
      auto value = ReadSmallFile(cap);
      if (!value) continue;
      if (value->size() > kMaxCapBytes) value->resize(kMaxCapBytes);
      const std::string name = cap.filename().string();
      (*d->mutable_caps())[name] = *value;
      uint32_t n = 0;
      if ((name == "counters" || name == "num_counters" || name == "nr_counters") && absl::SimpleAtoi(*value, &n)) {
        d->set_num_counters(n);
      }
    }
    uint32_t events = 0;
    for (auto it = fs::directory_iterator(dir / "events", ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      ++events;
    }
    d->set_named_events(events);
  }
}

void DiscoverCpuModels(const fs::path& procfs, v1::HostInfo* info) {
  std::ifstream in(procfs / "cpuinfo");
  if (!in) return;
  std::map<unsigned, std::string> models;
  int cpu = -1;
  unsigned implementer = 0, part = 0;
  bool have_arm = false;
  auto flush = [&] {
    if (cpu >= 0 && have_arm && models.find(static_cast<unsigned>(cpu)) == models.end()) {
      models[static_cast<unsigned>(cpu)] = ArmCpuName(implementer, part);
    }
    have_arm = false;
  };
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, colon)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (key == "processor") {
      flush();
      if (!absl::SimpleAtoi(value, &cpu)) cpu = -1;
    } else if (key == "model name" && cpu >= 0) {
      models[static_cast<unsigned>(cpu)] = value;
    } else if (key == "CPU implementer") {
      have_arm = absl::SimpleHexAtoi(absl::StripPrefix(value, "0x"), &implementer);
    } else if (key == "CPU part") {
      (void)absl::SimpleHexAtoi(absl::StripPrefix(value, "0x"), &part);
    }
  }
  flush();
  if (models.empty()) return;
  const unsigned count = std::min<unsigned>(models.rbegin()->first + 1, kMaxCpus);
  for (unsigned i = 0; i < count; ++i) {
    auto it = models.find(i);
    info->add_cpu_models(it == models.end() ? "" : it->second);
  }
}

void DiscoverKvm(const std::string& device, v1::HostInfo* info) {
  const int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    info->set_kvm_present(false);
    return;
  }
  const int api = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  info->set_kvm_present(api >= 0);
  auto& caps = *info->mutable_kvm_capabilities();
  caps["KVM_API_VERSION"] = absl::StrCat(api);
  // A capability is a number >= 0 from KVM_CHECK_EXTENSION (0 = absent).
  caps["KVM_CAP_ARM_PMU_V3"] = absl::StrCat(::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_PMU_V3));
  caps["KVM_CAP_ARM_VM_IPA_SIZE"] = absl::StrCat(::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_VM_IPA_SIZE));
  ::close(fd);
}

}  // namespace

std::string ArmCpuName(unsigned implementer, unsigned part) {
  if (implementer != 0x41) return absl::StrCat("implementer 0x", absl::Hex(implementer), " part 0x", absl::Hex(part));
  switch (part) {
    case 0xd03: return "Cortex-A53";
    case 0xd07: return "Cortex-A57";
    case 0xd08: return "Cortex-A72";
    case 0xd0b: return "Cortex-A76";
    case 0xd0c: return "Neoverse-N1";
    case 0xd40: return "Neoverse-V1";
    case 0xd49: return "Neoverse-N2";
    case 0xd4f: return "Neoverse-V2";
    case 0xd8e: return "Neoverse-N3";
    case 0xd84: return "Neoverse-V3";
    default: return absl::StrCat("Arm part 0x", absl::Hex(part));
  }
}

void DiscoverHost(const DiscoveryRoots& roots, v1::HostInfo* info) {
  struct utsname u;
  if (::uname(&u) == 0) {
    info->set_arch(u.machine);
    info->set_kernel(u.release);
  }
  DiscoverPmuDevices(roots.sysfs, info);
  DiscoverCpuModels(roots.procfs, info);
  DiscoverKvm(roots.kvm_device, info);
}

}  // namespace fleetpmu::agent
