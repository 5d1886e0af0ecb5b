#include "proto/fleetpmu/config/config_validation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/config/config_defaults.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"

namespace fleetpmu::config {
namespace {

using fleetpmu::v1::AgentConfig;
using fleetpmu::v1::EventFilter;
using fleetpmu::v1::KvmHost;
using fleetpmu::v1::ServerConfig;
using fleetpmu::v1::ShimConfig;
using fleetpmu::v1::SimHost;
using google::protobuf::EnumDescriptor;

// Architectural limits (PMU.md section 1 and 7).
constexpr uint32_t kMaxEventCounters = 31;  // PMCR_EL0.N is 5 bits; bit 31 is PMCCNTR
constexpr uint32_t kMaxEventNumber = 0xFFFF;  // PMEVTYPER evtCount, 16 bits since PMUv3p1
constexpr uint32_t kEventSpace = 0x10000;
constexpr uint64_t kMaxSamplePeriod = uint64_t{1} << 48;
// sun_path of struct sockaddr_un is 108 bytes including the terminating NUL.
constexpr std::size_t kMaxSocketPath = 107;
constexpr std::size_t kMaxIdentityBytes = 128;
constexpr std::size_t kMaxReportedProblems = 20;

// Collects every problem so that one run of the daemon shows them all.
class Problems {
 public:
  void Add(absl::string_view path, absl::string_view what) {
    ++count_;
    if (messages_.size() < kMaxReportedProblems) {
      messages_.push_back(absl::StrCat(path, ": ", what));
    }
  }

  absl::Status ToStatus() const {
    if (count_ == 0) return absl::OkStatus();
    std::string message = absl::StrJoin(messages_, "\n");
    if (count_ > messages_.size()) {
      absl::StrAppend(&message, "\nand ", count_ - messages_.size(), " more problems");
    }
    return absl::InvalidArgumentError(message);
  }

 private:
  std::vector<std::string> messages_;
  std::size_t count_ = 0;
};

std::string Quote(absl::string_view value) {
  return absl::StrCat("\"", absl::CHexEscape(value), "\"");
}

std::string Field(absl::string_view parent, absl::string_view name) {
  return parent.empty() ? std::string(name) : absl::StrCat(parent, ".", name);
}

std::string Element(absl::string_view path, int index) {
  return absl::StrCat(path, "[", index, "]");
}

std::string Hex(uint64_t value) { return absl::StrFormat("0x%X", value); }

bool IsIdentityChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// Identities (host_id, tenant_id, vm_id, ...) end up in SQL rows, Prometheus labels and file
// names, so they are restricted to a safe alphabet. `why` says why an empty one is refused.
void CheckIdentity(Problems& problems, absl::string_view path, absl::string_view value,
                   absl::string_view why) {
  if (value.empty()) {
    problems.Add(path, absl::StrCat("empty; ", why));
    return;
  }
  if (value.size() > kMaxIdentityBytes) {
    problems.Add(path, absl::StrCat(Quote(value), " is ", value.size(), " bytes, more than ",
                                    kMaxIdentityBytes));
    return;
  }
  for (char c : value) {
    if (!IsIdentityChar(c)) {
      problems.Add(path, absl::StrCat(Quote(value), " has a character outside [A-Za-z0-9._-]"));
      return;
    }
  }
}

template <typename T>
void CheckRange(Problems& problems, absl::string_view path, T value, T min, T max) {
  if (value < min || value > max) {
    problems.Add(path, absl::StrCat(value, " is outside ", min, "..", max));
  }
}

void CheckEnum(Problems& problems, absl::string_view path, int value,
               const EnumDescriptor* descriptor) {
  if (descriptor->FindValueByNumber(value) == nullptr) {
    problems.Add(path, absl::StrCat(value, " is not a ", descriptor->full_name(), " value"));
  } else if (value == 0) {
    problems.Add(path, absl::StrCat(descriptor->value(0)->name(), " is not a setting"));
  }
}

std::optional<absl::Duration> FromProto(const google::protobuf::Duration& d) {
  constexpr int32_t kNanosPerSecond = 1000000000;
  if (d.nanos() <= -kNanosPerSecond || d.nanos() >= kNanosPerSecond) return std::nullopt;
  if ((d.seconds() > 0 && d.nanos() < 0) || (d.seconds() < 0 && d.nanos() > 0)) {
    return std::nullopt;
  }
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Checks min <= d <= max and returns d when it is well formed.
std::optional<absl::Duration> CheckDuration(Problems& problems, absl::string_view path,
                                            const google::protobuf::Duration& d,
                                            absl::Duration min, absl::Duration max) {
  std::optional<absl::Duration> value = FromProto(d);
  if (!value) {
    problems.Add(path, absl::StrCat("malformed duration (seconds: ", d.seconds(),
                                    ", nanos: ", d.nanos(), ")"));
    return std::nullopt;
  }
  if (*value < min) {
    problems.Add(path, absl::StrCat(absl::FormatDuration(*value), " is below the minimum ",
                                    absl::FormatDuration(min)));
  } else if (*value > max) {
    problems.Add(path, absl::StrCat(absl::FormatDuration(*value), " exceeds the maximum ",
                                    absl::FormatDuration(max)));
  }
  return value;
}

void CheckProbability(Problems& problems, absl::string_view path, double value, double max) {
  if (!std::isfinite(value) || value < 0 || value > max) {
    problems.Add(path, absl::StrCat(value, " is outside 0..", max));
  }
}

void CheckSocketPath(Problems& problems, absl::string_view path, absl::string_view value) {
  if (value.empty()) {
    problems.Add(path, "empty; a unix socket needs a path");
  } else if (value.size() > kMaxSocketPath) {
    problems.Add(path, absl::StrCat(Quote(value), " is ", value.size(),
                                    " bytes; a unix socket path has at most ", kMaxSocketPath));
  } else if (value.find('\0') != absl::string_view::npos) {
    problems.Add(path, absl::StrCat(Quote(value), " contains a NUL byte"));
  }
}

enum class AddressUse { kListen, kDial };

// Accepts "host:port", "[v6]:port" and "unix:/path" (gRPC's syntax); a dial target may also
// start with "dns:///". Port 0 ("any free port") only makes sense for a listener.
std::optional<std::string> AddressProblem(absl::string_view address, AddressUse use) {
  if (address.empty()) return "empty";
  if (absl::ConsumePrefix(&address, "unix:")) {
    if (address.empty()) return "unix: needs a socket path";
    if (address.size() > kMaxSocketPath) {
      return absl::StrCat("socket path is ", address.size(), " bytes, more than ",
                          kMaxSocketPath);
    }
    return std::nullopt;
  }
  if (use == AddressUse::kDial) absl::ConsumePrefix(&address, "dns:///");
  std::size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return "has no port (expected host:port or unix:/path)";
  absl::string_view host = address.substr(0, colon);
  absl::string_view port = address.substr(colon + 1);
  if (host.empty()) {
    return use == AddressUse::kListen
               ? "has no host (0.0.0.0:PORT listens on every IPv4 address)"
               : "has no host";
  }
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) return "has an unterminated [IPv6] host";
  } else if (host.find(':') != absl::string_view::npos) {
    return "has an IPv6 host without brackets (write [::1]:PORT)";
  }
  uint32_t port_number = 0;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return absl::ascii_isdigit(c); }) ||
      !absl::SimpleAtoi(port, &port_number) || port_number > 65535) {
    return absl::StrCat("port ", Quote(port), " is not a number 0..65535");
  }
  if (port_number == 0 && use == AddressUse::kDial) return "port 0 cannot be dialled";
  return std::nullopt;
}

void CheckAddress(Problems& problems, absl::string_view path, absl::string_view value,
                  AddressUse use) {
  if (std::optional<std::string> problem = AddressProblem(value, use)) {
    problems.Add(path, absl::StrCat(Quote(value), " ", *problem));
  }
}

void CheckEventFilter(Problems& problems, absl::string_view path, const EventFilter& filter) {
  constexpr int kMaxRanges = 256;
  if (filter.ranges_size() > kMaxRanges) {
    problems.Add(Field(path, "ranges"), absl::StrCat(filter.ranges_size(),
                                                     " ranges, more than ", kMaxRanges));
  }
  for (int i = 0; i < filter.ranges_size(); ++i) {
    const fleetpmu::v1::EventFilterRange& range = filter.ranges(i);
    const std::string range_path = Element(Field(path, "ranges"), i);
    if (range.base_event() > kMaxEventNumber) {
      problems.Add(Field(range_path, "base_event"),
                   absl::StrCat(Hex(range.base_event()), " exceeds ", Hex(kMaxEventNumber)));
    } else if (range.nevents() == 0) {
      problems.Add(Field(range_path, "nevents"), "0; a range needs at least one event");
    } else if (uint64_t{range.base_event()} + range.nevents() > kEventSpace) {
      problems.Add(Field(range_path, "nevents"),
                   absl::StrCat(range.nevents(), " from base_event ", Hex(range.base_event()),
                                " passes the last event number ", Hex(kMaxEventNumber)));
    }
    if (range.action() == fleetpmu::v1::FILTER_ACTION_UNSPECIFIED) {
      problems.Add(Field(range_path, "action"),
                   "unset; say FILTER_ACTION_ALLOW or FILTER_ACTION_DENY");
    } else {
      CheckEnum(problems, Field(range_path, "action"), range.action(),
                fleetpmu::v1::FilterAction_descriptor());
    }
  }
}

void CheckEventCodes(Problems& problems, absl::string_view path,
                     const google::protobuf::RepeatedField<uint32_t>& events) {
  constexpr int kMaxEvents = 32;
  if (events.size() > kMaxEvents) {
    problems.Add(path, absl::StrCat(events.size(), " events, more than ", kMaxEvents));
  }
  for (int i = 0; i < events.size(); ++i) {
    if (events[i] > kMaxEventNumber) {
      problems.Add(Element(path, i),
                   absl::StrCat(Hex(events[i]), " exceeds ", Hex(kMaxEventNumber)));
    }
  }
}

// Checks that ids are unique within a list and reports the first duplicate's position.
class UniqueIds {
 public:
  explicit UniqueIds(std::string list_path) : list_path_(std::move(list_path)) {}

  void Check(Problems& problems, absl::string_view path, const std::string& id, int index,
             absl::string_view field) {
    if (id.empty()) return;
    auto [it, inserted] = first_index_.emplace(id, index);
    if (!inserted) {
      problems.Add(path, absl::StrCat(Quote(id), " duplicates ",
                                      Field(Element(list_path_, it->second), field)));
    }
  }

 private:
  std::string list_path_;
  absl::flat_hash_map<std::string, int> first_index_;
};

// --- ShimConfig ----------------------------------------------------------------------------

struct SimPcpus {
  uint64_t total = 0;
  uint32_t smallest_n = kMaxEventCounters;
  int smallest_n_group = -1;
  int first_without_hpmn0 = -1;  // index of a group lacking FEAT_HPMN0, -1 if none
};

SimPcpus CheckPcpuGroups(Problems& problems, const SimHost& sim) {
  SimPcpus pcpus;
  for (int i = 0; i < sim.pcpu_groups_size(); ++i) {
    const fleetpmu::v1::PcpuGroup& group = sim.pcpu_groups(i);
    const std::string path = Element("sim.pcpu_groups", i);
    pcpus.total += group.count();
    if (group.n_counters() > kMaxEventCounters) {
      problems.Add(Field(path, "n_counters"),
                   absl::StrCat(group.n_counters(), " exceeds ", kMaxEventCounters,
                                " (PMCR_EL0.N is 5 bits and bit 31 of every counter bitmap is "
                                "the cycle counter)"));
    } else if (pcpus.smallest_n_group < 0 || group.n_counters() < pcpus.smallest_n) {
      pcpus.smallest_n = group.n_counters();
      pcpus.smallest_n_group = i;
    }
    if (!group.hpmn0() && pcpus.first_without_hpmn0 < 0) pcpus.first_without_hpmn0 = i;
    CheckIdentity(problems, Field(path, "pmu_id"), group.pmu_id(),
                  "pCPUs are matched by PMU id");
  }
  constexpr uint64_t kMaxPcpus = 4096;
  if (pcpus.total > kMaxPcpus) {
    problems.Add("sim.pcpu_groups",
                 absl::StrCat(pcpus.total, " pCPUs in total, more than ", kMaxPcpus));
  }
  return pcpus;
}

void CheckWorkload(Problems& problems, absl::string_view path,
                   const fleetpmu::v1::Workload& workload) {
  CheckEnum(problems, Field(path, "kind"), workload.kind(),
            fleetpmu::v1::Workload::Kind_descriptor());
  CheckEventCodes(problems, Field(path, "events"), workload.events());
  CheckRange<uint64_t>(problems, Field(path, "sample_period"), workload.sample_period(), 1,
                       kMaxSamplePeriod);
  CheckDuration(problems, Field(path, "handler_latency"), workload.handler_latency(),
                absl::ZeroDuration(), absl::Seconds(1));
  CheckRange<uint64_t>(problems, Field(path, "event_rate_hz"), workload.event_rate_hz(), 1,
                       uint64_t{1000000000000});
  if (workload.has_run_between_halts()) {
    CheckDuration(problems, Field(path, "run_between_halts"), workload.run_between_halts(),
                  absl::Microseconds(1), absl::Hours(1));
  }
  CheckDuration(problems, Field(path, "halt_duration"), workload.halt_duration(),
                absl::Microseconds(1), absl::Hours(1));
}

void CheckSimVms(Problems& problems, const SimHost& sim, const SimPcpus& pcpus) {
  constexpr int kMaxVms = 1024;
  if (sim.vms_size() > kMaxVms) {
    problems.Add("sim.vms", absl::StrCat(sim.vms_size(), " VMs, more than ", kMaxVms));
  }
  UniqueIds vm_ids("sim.vms");
  for (int i = 0; i < sim.vms_size(); ++i) {
    const fleetpmu::v1::SimVm& vm = sim.vms(i);
    const std::string path = Element("sim.vms", i);
    CheckIdentity(problems, Field(path, "vm_id"), vm.vm_id(), "every VM needs an id");
    vm_ids.Check(problems, Field(path, "vm_id"), vm.vm_id(), i, "vm_id");
    CheckIdentity(problems, Field(path, "tenant_id"), vm.tenant_id(),
                  "every VM belongs to a tenant");
    CheckRange<uint32_t>(problems, Field(path, "vcpus"), vm.vcpus(), 1, 512);
    CheckEnum(problems, Field(path, "policy"), vm.policy(), fleetpmu::v1::Policy_descriptor());
    CheckEnum(problems, Field(path, "implementation"), vm.implementation(),
              fleetpmu::v1::PmuImplementation_descriptor());

    // PMU.md section 2: h > N is UNPREDICTABLE and must be refused at configuration time;
    // a vCPU may run on any pCPU, so the smallest N bounds h.
    const std::string h_path = Field(path, "h");
    if (vm.h() > kMaxEventCounters) {
      problems.Add(h_path, absl::StrCat(vm.h(), " exceeds ", kMaxEventCounters));
    } else if (pcpus.smallest_n_group >= 0 && vm.h() > pcpus.smallest_n) {
      problems.Add(h_path, absl::StrCat(vm.h(), " exceeds the smallest N=", pcpus.smallest_n,
                                        " of the pCPUs (",
                                        Element("sim.pcpu_groups", pcpus.smallest_n_group),
                                        ")"));
    } else if (vm.h() == 0 && pcpus.first_without_hpmn0 >= 0 &&
               vm.implementation() == fleetpmu::v1::PMU_IMPLEMENTATION_PARTITIONED) {
      problems.Add(h_path, absl::StrCat("0 needs FEAT_HPMN0 on every pCPU, but ",
                                        Element("sim.pcpu_groups", pcpus.first_without_hpmn0),
                                        " has hpmn0: false"));
    }
    CheckEventFilter(problems, Field(path, "event_filter"), vm.event_filter());
    CheckWorkload(problems, Field(path, "workload"), vm.workload());
  }
}

void CheckHostEvents(Problems& problems, const SimHost& sim, uint64_t total_pcpus) {
  constexpr int kMaxHostEvents = 64;
  if (sim.host_events_size() > kMaxHostEvents) {
    problems.Add("sim.host_events", absl::StrCat(sim.host_events_size(),
                                                 " host events, more than ", kMaxHostEvents));
  }
  UniqueIds names("sim.host_events");
  for (int i = 0; i < sim.host_events_size(); ++i) {
    const fleetpmu::v1::HostEvent& event = sim.host_events(i);
    const std::string path = Element("sim.host_events", i);
    CheckIdentity(problems, Field(path, "name"), event.name(),
                  "host events are reported by name");
    names.Check(problems, Field(path, "name"), event.name(), i, "name");
    if (event.event_code() > kMaxEventNumber) {
      problems.Add(Field(path, "event_code"),
                   absl::StrCat(Hex(event.event_code()), " exceeds ", Hex(kMaxEventNumber)));
    }
    if (event.sample_period() > kMaxSamplePeriod) {
      problems.Add(Field(path, "sample_period"),
                   absl::StrCat(event.sample_period(), " exceeds 2^48"));
    }
    for (int j = 0; j < event.pcpus_size(); ++j) {
      if (event.pcpus(j) >= total_pcpus) {
        problems.Add(Element(Field(path, "pcpus"), j),
                     absl::StrCat(event.pcpus(j), " is not a pCPU (the host has ", total_pcpus,
                                  ")"));
      }
    }
  }
}

void CheckSim(Problems& problems, const SimHost& sim) {
  CheckIdentity(problems, "sim.host_id", sim.host_id(), "the simulated host needs an id");
  SimPcpus pcpus = CheckPcpuGroups(problems, sim);
  CheckEnum(problems, "sim.reservation_mode", sim.reservation_mode(),
            fleetpmu::v1::ReservationMode_descriptor());
  CheckDuration(problems, "sim.time_slice", sim.time_slice(), absl::Microseconds(10),
                absl::Seconds(1));
  CheckProbability(problems, "sim.migration_probability", sim.migration_probability(), 1.0);
  CheckProbability(problems, "sim.speed", sim.speed(), 1e6);
  if (sim.has_duration()) {
    CheckDuration(problems, "sim.duration", sim.duration(), absl::Nanoseconds(1),
                  absl::Hours(24 * 365));
  }
  CheckSimVms(problems, sim, pcpus);
  CheckHostEvents(problems, sim, pcpus.total);
}

void CheckKvm(Problems& problems, const KvmHost& kvm) {
  if (kvm.kvm_device().empty()) problems.Add("kvm.kvm_device", "empty");
  CheckEnum(problems, "kvm.kernel_policy", kvm.kernel_policy(),
            fleetpmu::v1::Policy_descriptor());
  CheckEnum(problems, "kvm.reservation_mode", kvm.reservation_mode(),
            fleetpmu::v1::ReservationMode_descriptor());
  constexpr int kMaxVms = 256;
  if (kvm.vms_size() > kMaxVms) {
    problems.Add("kvm.vms", absl::StrCat(kvm.vms_size(), " VMs, more than ", kMaxVms));
  }
  UniqueIds vm_ids("kvm.vms");
  for (int i = 0; i < kvm.vms_size(); ++i) {
    const fleetpmu::v1::KvmVm& vm = kvm.vms(i);
    const std::string path = Element("kvm.vms", i);
    CheckIdentity(problems, Field(path, "vm_id"), vm.vm_id(), "every VM needs an id");
    vm_ids.Check(problems, Field(path, "vm_id"), vm.vm_id(), i, "vm_id");
    CheckIdentity(problems, Field(path, "tenant_id"), vm.tenant_id(),
                  "every VM belongs to a tenant");
    CheckRange<uint32_t>(problems, Field(path, "vcpus"), vm.vcpus(), 1, 512);
    // N is known only on the real host; the kvm backend checks h <= N when the VM starts.
    if (vm.has_h() && vm.h() > kMaxEventCounters) {
      problems.Add(Field(path, "h"), absl::StrCat(vm.h(), " exceeds ", kMaxEventCounters));
    }
    CheckRange<uint32_t>(problems, Field(path, "memory_mib"), vm.memory_mib(), 1, 4096);
    CheckEventFilter(problems, Field(path, "event_filter"), vm.event_filter());
    const std::string canary = Field(path, "canary");
    CheckEventCodes(problems, Field(canary, "events"), vm.canary().events());
    CheckRange<uint64_t>(problems, Field(canary, "sample_period"), vm.canary().sample_period(),
                         1, uint64_t{1} << 32);
    CheckRange<uint64_t>(problems, Field(canary, "wraps"), vm.canary().wraps(), 1, 1000000000);
    if (vm.canary().sample_periods_size() > vm.canary().events_size()) {
      problems.Add(Field(canary, "sample_periods"),
                   absl::StrCat(vm.canary().sample_periods_size(), " periods for ",
                                vm.canary().events_size(), " events"));
    }
    for (int j = 0; j < vm.canary().sample_periods_size(); ++j) {
      CheckRange<uint64_t>(problems, Element(Field(canary, "sample_periods"), j),
                           vm.canary().sample_periods(j), 0, uint64_t{1} << 32);
    }
    CheckRange<uint64_t>(problems, Field(canary, "cycle_sample_period"),
                         vm.canary().cycle_sample_period(), 1, uint64_t{1} << 32);
    CheckDuration(problems, Field(canary, "timeout"), vm.canary().timeout(), absl::Milliseconds(10),
                  absl::Hours(1));
  }
  // Host events of the kvm backend: counted with perf_event_open, never sampled.
  constexpr int kMaxHostEvents = 64;
  if (kvm.host_events_size() > kMaxHostEvents) {
    problems.Add("kvm.host_events", absl::StrCat(kvm.host_events_size(), " host events, more than ",
                                                 kMaxHostEvents));
  }
  UniqueIds names("kvm.host_events");
  for (int i = 0; i < kvm.host_events_size(); ++i) {
    const fleetpmu::v1::HostEvent& event = kvm.host_events(i);
    const std::string path = Element("kvm.host_events", i);
    CheckIdentity(problems, Field(path, "name"), event.name(), "host events are reported by name");
    names.Check(problems, Field(path, "name"), event.name(), i, "name");
    if (event.event_code() > kMaxEventNumber) {
      problems.Add(Field(path, "event_code"),
                   absl::StrCat(Hex(event.event_code()), " exceeds ", Hex(kMaxEventNumber)));
    }
    if (event.sample_period() != 0) {
      problems.Add(Field(path, "sample_period"),
                   "the kvm backend counts host events; sampling them is not supported");
    }
  }
}

// --- AgentConfig / ServerConfig ------------------------------------------------------------

void CheckLabels(Problems& problems, const google::protobuf::Map<std::string, std::string>& m) {
  constexpr std::size_t kMaxLabels = 32;
  if (m.size() > kMaxLabels) {
    problems.Add("labels", absl::StrCat(m.size(), " labels, more than ", kMaxLabels));
  }
  // Sorted, so that the message does not depend on hash order.
  std::map<std::string, std::string> sorted(m.begin(), m.end());
  for (const auto& [key, value] : sorted) {
    const std::string path = absl::StrCat("labels[", Quote(key), "]");
    bool key_ok = !key.empty() && key.size() <= 63;
    for (char c : key) {
      if (!(absl::ascii_islower(static_cast<unsigned char>(c)) ||
            absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '_')) {
        key_ok = false;
      }
    }
    if (!key_ok) problems.Add(path, "a label key is 1..63 bytes of [a-z0-9_]");
    if (value.size() > 255) {
      problems.Add(path, absl::StrCat("value is ", value.size(), " bytes, more than 255"));
    }
  }
}

}  // namespace

absl::Status ValidateShimConfig(const ShimConfig& raw) {
  ShimConfig config = raw;
  ApplyShimDefaults(&config);
  Problems problems;
  CheckIdentity(problems, "shim_id", config.shim_id(), "the shim needs an id");
  CheckEnum(problems, "backend", config.backend(), fleetpmu::v1::Backend_descriptor());
  const bool backend_defaulted = raw.backend() == fleetpmu::v1::BACKEND_UNSPECIFIED;
  if (config.backend() == fleetpmu::v1::BACKEND_SIM) {
    if (config.has_kvm()) {
      problems.Add("kvm", absl::StrCat("set, but backend is BACKEND_SIM",
                                       backend_defaulted
                                           ? " (the default; add backend: BACKEND_KVM)"
                                           : ""));
    }
    CheckSim(problems, config.sim());
  } else if (config.backend() == fleetpmu::v1::BACKEND_KVM) {
    if (config.has_sim()) problems.Add("sim", "set, but backend is BACKEND_KVM");
    CheckKvm(problems, config.kvm());
  }
  CheckSocketPath(problems, "agent_socket", config.agent_socket());
  CheckDuration(problems, "report_interval", config.report_interval(),
                absl::Milliseconds(100), absl::Hours(1));
  const uint32_t capacity = config.telemetry_ring_capacity();
  if (capacity < 16 || capacity > (1u << 20) || (capacity & (capacity - 1)) != 0) {
    // Ring indices wrap with a mask, so the capacity must be a power of two.
    problems.Add("telemetry_ring_capacity",
                 absl::StrCat(capacity, " is not a power of two in 16..1048576"));
  }
  return problems.ToStatus();
}

absl::Status ValidateAgentConfig(const AgentConfig& raw) {
  AgentConfig config = raw;
  ApplyAgentDefaults(&config);
  Problems problems;
  // Empty host_id means "the hostname", resolved at startup.
  if (!config.host_id().empty()) {
    CheckIdentity(problems, "host_id", config.host_id(), "");
  }
  CheckSocketPath(problems, "shim_socket", config.shim_socket());
  if (config.shim_socket_mode() > 0777) {
    problems.Add("shim_socket_mode",
                 absl::StrFormat("%#o is not a permission mask (at most 0777)",
                                 config.shim_socket_mode()));
  }
  if (config.spool_path().empty()) problems.Add("spool_path", "empty");
  if (config.spool_max_bytes() < (1u << 20)) {
    problems.Add("spool_max_bytes",
                 absl::StrCat(config.spool_max_bytes(), " is below the minimum 1048576 (1 MiB)"));
  }
  CheckEnum(problems, "spool_overflow_policy", config.spool_overflow_policy(),
            fleetpmu::v1::SpoolOverflowPolicy_descriptor());
  if (config.server_address().empty()) {
    problems.Add("server_address", "empty; the agent needs the server's ingest address "
                                   "(host:port)");
  } else {
    CheckAddress(problems, "server_address", config.server_address(), AddressUse::kDial);
  }
  if (!config.has_tls() && !config.allow_plaintext()) {
    problems.Add("tls", "not set; a plaintext connection to the server needs "
                        "allow_plaintext: true");
  }
  if (config.has_tls()) {
    const fleetpmu::v1::ClientTlsConfig& tls = config.tls();
    if (!tls.cert_file().empty() && tls.key_file().empty()) {
      problems.Add("tls.key_file", "empty, but tls.cert_file is set; a certificate needs its key");
    }
    if (tls.cert_file().empty() && !tls.key_file().empty()) {
      problems.Add("tls.cert_file", "empty, but tls.key_file is set; a key needs its certificate");
    }
  }
  CheckRange<uint32_t>(problems, "batch_max_bytes", config.batch_max_bytes(), 4096, 64u << 20);
  CheckRange<uint32_t>(problems, "batch_max_records", config.batch_max_records(), 1, 100000);
  CheckDuration(problems, "batch_max_delay", config.batch_max_delay(), absl::ZeroDuration(),
                absl::Hours(1));
  std::optional<absl::Duration> backoff_min =
      CheckDuration(problems, "backoff_min", config.backoff_min(), absl::Milliseconds(1),
                    absl::Hours(1));
  std::optional<absl::Duration> backoff_max =
      CheckDuration(problems, "backoff_max", config.backoff_max(), absl::Milliseconds(1),
                    absl::Hours(1));
  if (backoff_min && backoff_max && *backoff_min > *backoff_max) {
    problems.Add("backoff_min", absl::StrCat(absl::FormatDuration(*backoff_min),
                                             " exceeds backoff_max ",
                                             absl::FormatDuration(*backoff_max)));
  }
  CheckAddress(problems, "metrics_listen", config.metrics_listen(), AddressUse::kListen);
  CheckLabels(problems, config.labels());
  return problems.ToStatus();
}

absl::Status ValidateServerConfig(const ServerConfig& raw) {
  ServerConfig config = raw;
  ApplyServerDefaults(&config);
  Problems problems;
  CheckAddress(problems, "ingest_listen", config.ingest_listen(), AddressUse::kListen);
  CheckAddress(problems, "query_listen", config.query_listen(), AddressUse::kListen);
  CheckAddress(problems, "metrics_listen", config.metrics_listen(), AddressUse::kListen);
  // /metrics is served by prometheus-cpp, the others by gRPC: they cannot share a port.
  for (absl::string_view other : {"ingest_listen", "query_listen"}) {
    const std::string& value =
        other == "ingest_listen" ? config.ingest_listen() : config.query_listen();
    if (config.metrics_listen() == value) {
      problems.Add("metrics_listen", absl::StrCat(Quote(value), " is also ", other,
                                                  "; /metrics needs its own address"));
    }
  }

  const fleetpmu::v1::StorageConfig& storage = config.storage();
  if (storage.sqlite_path().empty()) problems.Add("storage.sqlite_path", "empty");
  std::optional<absl::Duration> raw_retention =
      CheckDuration(problems, "storage.raw_retention", storage.raw_retention(),
                    absl::Minutes(1), absl::Hours(24 * 365));
  CheckDuration(problems, "storage.rollup_interval", storage.rollup_interval(),
                absl::Seconds(10), absl::Hours(1));
  std::optional<absl::Duration> rollup_retention =
      CheckDuration(problems, "storage.rollup_retention", storage.rollup_retention(),
                    absl::Minutes(1), absl::Hours(24 * 3650));
  if (raw_retention && rollup_retention && *rollup_retention < *raw_retention) {
    problems.Add("storage.rollup_retention",
                 absl::StrCat(absl::FormatDuration(*rollup_retention),
                              " is shorter than storage.raw_retention ",
                              absl::FormatDuration(*raw_retention)));
  }

  if (!config.has_tls() && !config.allow_plaintext()) {
    problems.Add("tls", "not set; plaintext listeners need allow_plaintext: true");
  }
  if (config.has_tls()) {
    const fleetpmu::v1::ServerTlsConfig& tls = config.tls();
    if (tls.cert_file().empty()) problems.Add("tls.cert_file", "empty; TLS needs a certificate");
    if (tls.key_file().empty()) problems.Add("tls.key_file", "empty; TLS needs a private key");
    if (tls.require_client_cert() && tls.ca_file().empty()) {
      problems.Add("tls.ca_file", "empty, but tls.require_client_cert is true; client "
                                  "certificates are checked against this CA");
    }
  }
  if (config.tokens_file().empty() && !config.allow_plaintext()) {
    problems.Add("tokens_file", "empty; the Query API needs bearer tokens unless "
                                "allow_plaintext: true");
  }

  const fleetpmu::v1::ServerLimits& limits = config.limits();
  CheckRange<uint32_t>(problems, "limits.max_streams", limits.max_streams(), 1, 100000);
  CheckRange<uint32_t>(problems, "limits.max_message_bytes", limits.max_message_bytes(),
                       64u << 10, 64u << 20);
  CheckRange<uint32_t>(problems, "limits.max_batch_records", limits.max_batch_records(), 1,
                       100000);
  const double rate = limits.per_stream_batches_per_second();
  if (!std::isfinite(rate) || rate <= 0 || rate > 100000) {
    problems.Add("limits.per_stream_batches_per_second",
                 absl::StrCat(rate, " is outside (0, 100000]"));
  }
  return problems.ToStatus();
}

}  // namespace fleetpmu::config
